//! The HTTP provider: connector configs from a remote configuration service.
//!
//! Each call builds its URL from `base_url` and the operation's template (`{key}` and
//! `{version}` substituted; keys are validated, so nothing needs escaping), sends it with
//! the configured headers, and retries with exponential backoff (`backon`) on connection
//! errors, timeouts, 5xx and 429 only. `response.error_path` and `response.data_path`
//! are dot-paths into JSON bodies (a segment indexes an array when it is a number).
//!
//! Requests go through hyper-util's pooled client. Its connector (below) opens a TCP
//! connection and, for `https`, wraps it with tokio-rustls, verified against the webpki
//! roots or a given CA.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use connector_sdk::ConnectorKind;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::connector::{ConnectorConfig, SinkConfig, SourceConfig};
use crate::load::Problem;
use crate::provider::{
    ActiveConfigs, ActiveVersions, BrokenConfig, ConfigProvider, ProviderError, check_request,
};
use crate::runtime::HttpProviderConfig;

/// Connector configs from a remote service.
pub struct HttpProvider {
    config: HttpProviderConfig,
    client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

/// A failed attempt, and whether another attempt may succeed.
#[derive(Debug)]
struct Attempt {
    retryable: bool,
    message: String,
}

/// A response that arrived.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl HttpProvider {
    /// A provider for `config`.
    pub fn new(config: HttpProviderConfig) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(config, roots)
    }

    /// A provider that trusts only `roots` for HTTPS (for private CAs and tests).
    pub fn with_roots(config: HttpProviderConfig, roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
            .map(Arc::new)
            // The default provider supports the default versions; this cannot fail.
            .unwrap_or_else(|_| {
                Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            });
        let connector = Connector {
            tls: TlsConnector::from(tls),
        };
        HttpProvider {
            config,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn url(&self, template: &str, key: &str, version: Option<u64>) -> String {
        let path = template.replace("{key}", key).replace(
            "{version}",
            &version.map(|v| v.to_string()).unwrap_or_default(),
        );
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Sends a request with retries; returns the last response (2xx or not) or error.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ProviderError> {
        let body = body.map(Bytes::from);
        let attempt = || self.attempt(method.clone(), url, body.clone());
        let retry = &self.config.retry;
        let result = if retry.enabled && retry.max_attempts > 1 {
            let backoff = ExponentialBuilder::default()
                .with_min_delay(retry.initial_backoff.get())
                .with_max_delay(retry.max_backoff.get())
                .with_factor(retry.backoff_multiplier as f32)
                .with_max_times(retry.max_attempts as usize - 1);
            attempt
                .retry(backoff)
                .sleep(tokio::time::sleep)
                .when(|failure: &Attempt| failure.retryable)
                .notify(|failure: &Attempt, pause: Duration| {
                    tracing::warn!(%url, error = %failure.message, ?pause, "config request failed; retrying");
                })
                .await
        } else {
            attempt().await
        };
        result.map_err(|failure| ProviderError::Remote(failure.message))
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, Attempt> {
        let timeout = self.config.timeout.get();
        let answer = tokio::time::timeout(timeout, self.exchange(method.clone(), url, body))
            .await
            .map_err(|_| Attempt {
                retryable: true,
                message: format!("{method} {url}: no answer within {}", self.config.timeout),
            })??;
        let status = answer.status;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt {
                retryable: true,
                message: format!(
                    "{method} {url}: HTTP {status} - {}",
                    String::from_utf8_lossy(&answer.body)
                ),
            });
        }
        Ok(answer)
    }

    /// One request through the pooled client.
    async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, Attempt> {
        let failed = |retryable: bool, what: String| Attempt {
            retryable,
            message: format!("{method} {url}: {what}"),
        };
        let uri: Uri = url
            .parse()
            .map_err(|error| failed(false, format!("invalid URL: {error}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(failed(
                false,
                "expected an http:// or https:// URL with a host".to_owned(),
            ));
        }
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(hyper::header::ACCEPT, "application/json");
        for (name, value) in &self.config.request_headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|error| failed(false, format!("invalid request: {error}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| failed(true, error_chain(&error)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| failed(true, format!("reading the body failed: {error}")))?
            .to_bytes();
        Ok(Answer { status, body })
    }

    /// Sends and decodes a JSON answer; `Ok(None)` for a 404 when `missing_is_none`.
    async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        missing_is_none: bool,
    ) -> Result<Option<T>, ProviderError> {
        let answer = self.send(method.clone(), url, body).await?;
        if missing_is_none && answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check_status(&method, url, &answer)?;
        let value = self.extract(&method, url, &answer.body)?;
        serde_json::from_value(value).map(Some).map_err(|error| {
            ProviderError::Remote(format!("{method} {url}: unexpected response: {error}"))
        })
    }

    /// Sends and checks only the status (and `error_path` when the body is JSON).
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(), ProviderError> {
        let answer = self.send(method.clone(), url, body).await?;
        check_status(&method, url, &answer)?;
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
            self.check_error(&method, url, &value)?;
        }
        Ok(())
    }

    fn check_error(
        &self,
        method: &Method,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<(), ProviderError> {
        if let Some(path) = self.config.response.error_path.as_deref()
            && let Some(error) = dot_path(body, path).filter(|error| !error.is_null())
        {
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(ProviderError::Remote(format!(
                "{method} {url}: API returned error: {text}"
            )));
        }
        Ok(())
    }

    /// Applies `error_path` then `data_path` to a JSON body.
    fn extract(
        &self,
        method: &Method,
        url: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, ProviderError> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
            ProviderError::Remote(format!("{method} {url}: the response is not JSON: {error}"))
        })?;
        self.check_error(method, url, &value)?;
        match self.config.response.data_path.as_deref() {
            None | Some("") => Ok(value),
            Some(path) => dot_path(&value, path).cloned().ok_or_else(|| {
                let keys: Vec<String> = value
                    .as_object()
                    .map(|object| object.keys().take(5).cloned().collect())
                    .unwrap_or_default();
                ProviderError::Remote(format!(
                    "{method} {url}: data_path `{path}` is not in the response (top-level keys: {keys:?})"
                ))
            }),
        }
    }
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

fn check_status(method: &Method, url: &str, answer: &Answer) -> Result<(), ProviderError> {
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(ProviderError::Remote(format!(
            "{method} {url}: HTTP {} - {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )))
    }
}

/// Follows a dot-path (`data.items.0.config`) into a JSON value.
pub fn dot_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .try_fold(value, |node, part| match node {
            serde_json::Value::Array(items) => part
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            serde_json::Value::Object(object) => object.get(part),
            _ => None,
        })
}

/// A config as the remote service sends it (a sink or source struct, with or without
/// a `type` field), typed by the kind we asked for.
fn typed(
    kind: ConnectorKind,
    mut value: serde_json::Value,
) -> Result<ConnectorConfig, ProviderError> {
    if let Some(object) = value.as_object_mut() {
        object.remove("type");
    }
    let config = match kind {
        ConnectorKind::Sink => {
            serde_json::from_value::<SinkConfig>(value).map(ConnectorConfig::Sink)
        }
        ConnectorKind::Source => {
            serde_json::from_value::<SourceConfig>(value).map(ConnectorConfig::Source)
        }
    }
    .map_err(|error| {
        ProviderError::Remote(format!(
            "the service sent an invalid {kind} config: {error}"
        ))
    })?;
    config.validate().map_err(ProviderError::Remote)?;
    config.remember_secrets();
    Ok(config)
}

fn not_found(kind: ConnectorKind, key: &str, version: Option<u64>) -> ProviderError {
    ProviderError::NotFound {
        kind,
        key: key.to_owned(),
        version,
    }
}

#[async_trait]
impl ConfigProvider for HttpProvider {
    async fn active_configs(&self) -> Result<ActiveConfigs, ProviderError> {
        #[derive(serde::Deserialize)]
        struct Active {
            #[serde(default)]
            sinks: std::collections::BTreeMap<String, serde_json::Value>,
            #[serde(default)]
            sources: std::collections::BTreeMap<String, serde_json::Value>,
        }
        let url = self.url(self.config.url_templates.get_active_configs(), "", None);
        let active: Active = self
            .fetch(Method::GET, &url, None, false)
            .await?
            .ok_or_else(|| ProviderError::Remote(format!("GET {url}: no answer")))?;
        // One config the service sends that cannot be used is that connector's
        // problem alone: it is listed as broken and the others run.
        let mut configs = ActiveConfigs::default();
        let kinds = [
            (ConnectorKind::Sink, active.sinks),
            (ConnectorKind::Source, active.sources),
        ];
        for (kind, active) in kinds {
            for (key, value) in active {
                match typed(kind, value.clone()) {
                    Ok(config) => {
                        let map = match kind {
                            ConnectorKind::Sink => &mut configs.sinks,
                            ConnectorKind::Source => &mut configs.sources,
                        };
                        map.insert(key, config);
                    }
                    Err(error) => {
                        let mut fields = value;
                        if let Some(object) = fields.as_object_mut() {
                            object.insert("type".to_owned(), kind.as_str().into());
                            object.insert("key".to_owned(), key.clone().into());
                        }
                        let problem = Problem {
                            source: url.clone(),
                            key: Some(format!("{}s.{key}", kind.as_str())),
                            message: error.to_string(),
                        };
                        configs.broken.push(BrokenConfig::from_fields(
                            Some(&fields),
                            &key,
                            problem,
                        ));
                    }
                }
            }
        }
        Ok(configs)
    }

    async fn active_versions(&self) -> Result<ActiveVersions, ProviderError> {
        /// `{"version": N, "created_at": ...}` per key, as upstream's service answers.
        #[derive(serde::Deserialize)]
        struct Entry {
            version: u64,
        }
        #[derive(serde::Deserialize)]
        struct Versions {
            #[serde(default)]
            sinks: std::collections::BTreeMap<String, Entry>,
            #[serde(default)]
            sources: std::collections::BTreeMap<String, Entry>,
        }
        let url = self.url(self.config.url_templates.get_active_versions(), "", None);
        let versions: Versions = self
            .fetch(Method::GET, &url, None, false)
            .await?
            .ok_or_else(|| ProviderError::Remote(format!("GET {url}: no answer")))?;
        Ok(ActiveVersions {
            sinks: versions
                .sinks
                .into_iter()
                .map(|(key, entry)| (key, entry.version))
                .collect(),
            sources: versions
                .sources
                .into_iter()
                .map(|(key, entry)| (key, entry.version))
                .collect(),
        })
    }

    async fn versions(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<Vec<ConnectorConfig>, ProviderError> {
        check_request(kind, key, None)?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.get_sink_configs(),
            ConnectorKind::Source => templates.get_source_configs(),
        };
        let url = self.url(template, key, None);
        let list: Vec<serde_json::Value> = self
            .fetch(Method::GET, &url, None, true)
            .await?
            .ok_or_else(|| not_found(kind, key, None))?;
        list.into_iter().map(|value| typed(kind, value)).collect()
    }

    async fn version(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, None)?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.get_sink_config(),
            ConnectorKind::Source => templates.get_source_config(),
        };
        let url = self.url(template, key, Some(version));
        let value = self
            .fetch(Method::GET, &url, None, true)
            .await?
            .ok_or_else(|| not_found(kind, key, Some(version)))?;
        typed(kind, value)
    }

    async fn active(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, None)?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.get_active_sink_config(),
            ConnectorKind::Source => templates.get_active_source_config(),
        };
        let url = self.url(template, key, None);
        let value = self
            .fetch(Method::GET, &url, None, true)
            .await?
            .ok_or_else(|| not_found(kind, key, None))?;
        typed(kind, value)
    }

    async fn create(
        &self,
        kind: ConnectorKind,
        key: &str,
        config: ConnectorConfig,
    ) -> Result<ConnectorConfig, ProviderError> {
        check_request(kind, key, Some(&config))?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.create_sink(),
            ConnectorKind::Source => templates.create_source(),
        };
        // The service assigns key and version.
        let mut body = serde_json::to_value(&config)
            .map_err(|error| ProviderError::Invalid(error.to_string()))?;
        if let Some(object) = body.as_object_mut() {
            for field in ["type", "key", "version"] {
                object.remove(field);
            }
        }
        let url = self.url(template, key, None);
        let bytes =
            serde_json::to_vec(&body).map_err(|error| ProviderError::Invalid(error.to_string()))?;
        let created = self
            .fetch(Method::POST, &url, Some(bytes), false)
            .await?
            .ok_or_else(|| ProviderError::Remote(format!("POST {url}: no answer")))?;
        typed(kind, created)
    }

    async fn set_active(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: u64,
    ) -> Result<(), ProviderError> {
        check_request(kind, key, None)?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.set_active_sink(),
            ConnectorKind::Source => templates.set_active_source(),
        };
        let url = self.url(template, key, Some(version));
        let body =
            serde_json::to_vec(&serde_json::json!({ "version": version })).unwrap_or_default();
        self.call(Method::PUT, &url, Some(body)).await
    }

    async fn delete(
        &self,
        kind: ConnectorKind,
        key: &str,
        version: Option<u64>,
    ) -> Result<(), ProviderError> {
        check_request(kind, key, None)?;
        let templates = &self.config.url_templates;
        let template = match kind {
            ConnectorKind::Sink => templates.delete_sink_config(),
            ConnectorKind::Source => templates.delete_source_config(),
        };
        let mut url = self.url(template, key, version);
        if let Some(version) = version {
            url.push_str(&format!("?version={version}"));
        }
        self.call(Method::DELETE, &url, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_paths_walk_objects_and_arrays() {
        let value = serde_json::json!({ "data": { "items": [ { "a": 1 }, { "a": 2 } ] } });
        assert_eq!(
            dot_path(&value, "data.items.1.a"),
            Some(&serde_json::json!(2))
        );
        assert_eq!(dot_path(&value, "data.missing"), None);
        assert_eq!(dot_path(&value, "data.items.x"), None);
        assert_eq!(dot_path(&value, ""), Some(&value));
    }
}

/// Opens connections for the pooled client: plain TCP, or TLS for `https` URLs.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
}

/// A connection the client can use.
enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri.host().ok_or("the URL has no host")?.to_owned();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(Stream::Plain(TokioIo::new(tcp)));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|error| format!("invalid TLS server name {host}: {error}"))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|error| format!("TLS handshake failed: {error}"))?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Stream::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(io) => std::pin::Pin::new(io).poll_write(cx, buf),
            Stream::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => std::pin::Pin::new(io).poll_flush(cx),
            Stream::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Stream::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
