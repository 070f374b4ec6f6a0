//! Request handling: authentication, CORS, routing, and one function per endpoint.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use config_provider::{ConnectorConfig, ProviderError};
use connector_sdk::ConnectorKind;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use runtime_core::{ConnectorState, ConnectorStatus, ControlError};
use serde_json::{Value, json};

use crate::render::Format;
use crate::routes::{Endpoint, Matched, match_path, query_param};
use crate::{ApiContext, BODY_LIMIT, OPENAPI};

/// A failed request: status, a machine-readable code and a sentence.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }

    fn not_found(kind: ConnectorKind, key: &str) -> Self {
        let code = match kind {
            ConnectorKind::Sink => "sink_not_found",
            ConnectorKind::Source => "source_not_found",
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            code,
            format!("no {kind} with key {key:?}"),
        )
    }

    fn bad_request(code: &'static str, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, reason)
    }

    /// The error as JSON. The reason is scrubbed of secrets
    /// ([`config_provider::scrub_secrets`]): it may quote a config value that came from
    /// `${env:...}` or `${file:...}` (a connector's `last_error` is scrubbed when it is
    /// recorded; configs are redacted field by field).
    fn into_response(self) -> Response<Full<Bytes>> {
        json_response(
            self.status,
            &json!({ "code": self.code, "reason": config_provider::scrub_secrets(&self.reason) }),
        )
    }
}

impl From<ProviderError> for ApiError {
    fn from(error: ProviderError) -> Self {
        match &error {
            ProviderError::NotFound { kind, .. } => {
                let code = match kind {
                    ConnectorKind::Sink => "sink_config_not_found",
                    ConnectorKind::Source => "source_config_not_found",
                };
                ApiError::new(StatusCode::NOT_FOUND, code, error.to_string())
            }
            ProviderError::Invalid(_) => {
                ApiError::bad_request("invalid_configuration", error.to_string())
            }
            ProviderError::Storage(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                error.to_string(),
            ),
            ProviderError::Remote(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "http_request_failed",
                error.to_string(),
            ),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match &error {
            ControlError::UnknownConnector { kind, key } => ApiError::not_found(*kind, key),
            ControlError::NotRunning { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_running", error.to_string())
            }
            // The library the config names is no usable plugin: the config's fault.
            ControlError::Plugin { .. } => ApiError::bad_request("plugin_error", error.to_string()),
            ControlError::PluginRefused { not_allowed, .. } => {
                tracing::warn!(%error, "refused a config's plugin library");
                ApiError::bad_request(
                    if *not_allowed {
                        "plugin_not_allowed"
                    } else {
                        "plugin_not_found"
                    },
                    error.to_string(),
                )
            }
            ControlError::Config { .. } => {
                ApiError::bad_request("invalid_configuration", error.to_string())
            }
            ControlError::ActivationFailed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "activation_failed", error.to_string())
            }
            ControlError::NotRecorded { error: cause, .. } => {
                let mut answer = ApiError::from(cause.clone());
                answer.reason = error.to_string();
                answer
            }
            ControlError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                error.to_string(),
            ),
        }
    }
}

type Answer = Result<Response<Full<Bytes>>, ApiError>;

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    body_response(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn body_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn ok(value: &Value) -> Answer {
    Ok(json_response(StatusCode::OK, value))
}

fn no_content() -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// Whether a Host header (`name`, `name:port`, `[v6]:port`) names this machine by a
/// loopback IP or `localhost`.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit, so the time taken does not tell how much of a
/// guess was right (only whether its length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Serves one request. The work runs in a task of its own: a request that outlives
/// `http.request_timeout` is answered 503 while its work (stopping a connector, say)
/// finishes rather than being dropped halfway, and a handler that panics is answered
/// 500 and logged instead of taking the connection down.
pub(crate) async fn handle(
    context: &Arc<ApiContext>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let cors = &context.http.cors;
    let request_headers = request.headers().clone();
    if cors.enabled
        && request.method() == Method::OPTIONS
        && crate::cors::is_preflight(&request_headers)
    {
        return match crate::cors::preflight(cors, &request_headers) {
            Ok(headers) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                response.headers_mut().extend(headers);
                response
            }
            Err(reason) => {
                ApiError::new(StatusCode::FORBIDDEN, "cors_refused", reason).into_response()
            }
        };
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Work that outlives its request holds a permit until it ends, so requests a
    // client gave up on cannot pile up without bound.
    let Ok(permit) = context.handlers.clone().try_acquire_owned() else {
        tracing::warn!(%method, %path, "every request handler is busy (http.max_connections of them)");
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "every request handler is busy with earlier requests; try again later",
        )
        .into_response();
        if cors.enabled {
            crate::cors::decorate(cors, &request_headers, response.headers_mut());
        }
        return response;
    };
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let work = tokio::spawn({
        let context = context.clone();
        let abandoned = abandoned.clone();
        let (method, path) = (method.clone(), path.clone());
        async move {
            let answer = route(&context, request).await;
            drop(permit);
            if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                let status = answer
                    .as_ref()
                    .map_or_else(|error| error.status, Response::status);
                tracing::info!(%method, %path, status = status.as_u16(), "a request answered 503 (request_timeout) has finished its work");
            }
            answer
        }
    });
    let limit = context.http.request_timeout.get();
    let answer = match tokio::time::timeout(limit, work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::error!(%method, %path, %error, "the request handler failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request handler failed; the runtime's log says why",
            ))
        }
        Err(_) => {
            abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(%method, %path, ?limit, "request not answered within http.request_timeout; its work goes on");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!(
                    "not answered within {limit:?} (http.request_timeout); the work goes on, check the connector's status"
                ),
            ))
        }
    };
    let mut response = answer.unwrap_or_else(ApiError::into_response);
    if cors.enabled {
        crate::cors::decorate(cors, &request_headers, response.headers_mut());
    }
    response
}

async fn route(context: &ApiContext, request: Request<Incoming>) -> Answer {
    let metrics = context
        .http
        .metrics
        .enabled
        .then_some(context.http.metrics.endpoint.as_str());
    let path = request.uri().path().to_owned();
    let Some(matched) = match_path(&path, metrics) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        ));
    };
    if !matched.methods.contains(&request.method().as_str()) {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} does not answer {}", path, request.method()),
        )
        .into_response();
        if let Ok(allow) = HeaderValue::from_str(&matched.methods.join(", ")) {
            response.headers_mut().insert(ALLOW, allow);
        }
        return Ok(response);
    }
    let public = matches!(matched.endpoint, Endpoint::Root | Endpoint::Health);
    let api_key = &context.http.api_key;
    if !public && !api_key.is_empty() {
        let given = request
            .headers()
            .get("api-key")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(given, api_key.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid api-key header is required",
            ));
        }
    }
    // With no key, a loopback API trusts whoever can connect to it. A web page can
    // connect too, through a host name of its own that it points at 127.0.0.1 (DNS
    // rebinding), and the browser then sends that name as the Host.
    if !public && api_key.is_empty() && context.http.loopback_only() {
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .map_or("(none)", |value| value.to_str().unwrap_or("(not text)"));
        if !host_is_loopback(host) {
            tracing::warn!(%host, %path, "refused a request whose Host is not a loopback name (DNS rebinding?)");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host {host:?} is not a loopback name: an API with no api key answers only requests addressed to localhost or a loopback IP (set http.api_key to serve others)"
                ),
            ));
        }
    }
    if request.method() != Method::GET
        && let Some(origin) = crate::cors::refused_origin(&context.http.cors, request.headers())
    {
        tracing::warn!(%origin, %path, method = %request.method(), "refused a request from a web page of another origin");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin_refused",
            format!(
                "{} {path} from a web page of {origin}, which http.cors does not allow",
                request.method()
            ),
        ));
    }
    // A web page may send a "simple" request (a form's POST, a text/plain body) to any
    // address without asking first, a bodiless POST .../stop among them; a JSON
    // content type or an api-key header it can send only after a CORS preflight,
    // which `[http.cors]` decides. So a request that changes something must carry one.
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !says_json(request.headers())
        && !request.headers().contains_key("api-key")
    {
        tracing::warn!(%path, method = %request.method(), "refused a changing request that is neither JSON nor carries an api-key header");
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{} {path}: a request that changes something must say content-type: application/json (its body may be empty) or carry an api-key header",
                request.method()
            ),
        ));
    }
    // Every route but GET changes a config or a connector's state, except checking a
    // plugin config, which changes nothing.
    if context.http.read_only
        && request.method() != hyper::Method::GET
        && matched.endpoint != Endpoint::ValidatePluginConfig
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            format!(
                "the API is read-only (http.read_only): {} {path} would change a config or a connector",
                request.method()
            ),
        ));
    }
    dispatch(context, matched, request).await
}

/// The connector a route names, with its key checked.
fn connector(matched: &Matched) -> Result<(ConnectorKind, String), ApiError> {
    let (Some(kind), Some(key)) = (matched.kind, matched.key.clone()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    };
    config_provider::validate_key(&key)
        .map_err(|reason| ApiError::bad_request("invalid_key", reason))?;
    Ok((kind, key))
}

async fn dispatch(context: &ApiContext, matched: Matched, request: Request<Incoming>) -> Answer {
    let runtime = &context.runtime;
    let query = request.uri().query().map(str::to_owned);
    match matched.endpoint {
        Endpoint::Root => Ok(body_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Connector Runtime API",
        )),
        Endpoint::Health => {
            ok(&json!({ "status": "healthy", "iggy_connected": runtime.iggy_connected() }))
        }
        Endpoint::Ready => ready(context).await,
        Endpoint::Stats => stats(context).await,
        Endpoint::Cluster => match runtime.cluster_view() {
            Some(view) => ok(&json!(view)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_in_a_cluster",
                "this runtime is not a member of a cluster: [cluster] enabled is false",
            )),
        },
        Endpoint::Metrics => Ok(body_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            runtime.prometheus(),
        )),
        Endpoint::OpenApi => Ok(body_response(StatusCode::OK, "application/json", OPENAPI)),
        Endpoint::Plugins => {
            let list = runtime.plugins().iter().map(plugin_info).collect();
            ok(&Value::Array(list))
        }
        Endpoint::ValidatePluginConfig => {
            let name = matched.key.clone().unwrap_or_default();
            let plugin = runtime.plugin(&name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "plugin_not_found",
                    format!("no plugin called {name:?} is known (GET /plugins lists them)"),
                )
            })?;
            let config = read_json(request, context.http.header_read_timeout.get()).await?;
            // Plugin code (its deserialisation and check) runs on a blocking thread, not
            // on the workers the pipelines share.
            let checked = plugin.clone();
            let problems = tokio::task::spawn_blocking(move || {
                runtime_core::check_plugin_config(&checked, &config)
            })
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("the plugin's config check failed: {error}"),
                )
            })?;
            // The plugin's words may quote a value that is some connector's secret.
            let problems: Vec<String> = problems
                .iter()
                .map(|problem| config_provider::scrub_secrets(problem).into_owned())
                .collect();
            ok(
                &json!({ "plugin": plugin.name(), "valid": problems.is_empty(), "problems": problems }),
            )
        }
        Endpoint::List => {
            let kind = matched.kind.unwrap_or(ConnectorKind::Sink);
            let mut list = Vec::new();
            for status in runtime.statuses().into_iter().filter(|s| s.kind == kind) {
                if let Some(config) = runtime.config(kind, &status.key).await {
                    list.push(info(runtime, &config, &status));
                }
            }
            ok(&Value::Array(list))
        }
        Endpoint::Details => {
            let (kind, key) = connector(&matched)?;
            let (config, status) = running(context, kind, &key).await?;
            let mut details = info(runtime, &config, &status);
            details["streams"] = runtime.redacted(&config)["streams"].take();
            details["metrics"] = metrics(&status);
            ok(&details)
        }
        Endpoint::Configs => {
            let (kind, key) = connector(&matched)?;
            match *request.method() {
                Method::POST => {
                    let body = read_json(request, context.http.header_read_timeout.get()).await?;
                    create_config(context, kind, &key, body).await
                }
                Method::DELETE => {
                    let version = match query_param(query.as_deref(), "version") {
                        Some(text) => Some(parse_version(&text)?),
                        None => None,
                    };
                    if let Some(config) = runtime.config(kind, &key).await
                        && version.is_none_or(|version| version == config.common().version)
                        && runtime
                            .status(kind, &key)
                            .is_some_and(|s| s.state != ConnectorState::Stopped)
                    {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "config_in_use",
                            format!(
                                "version {} of {kind} {key:?} is running; activate another or stop it first",
                                config.common().version
                            ),
                        ));
                    }
                    context.provider.delete(kind, &key, version).await?;
                    no_content()
                }
                _ => {
                    let running = runtime
                        .config(kind, &key)
                        .await
                        .map(|config| config.common().version);
                    let versions = context.provider.versions(kind, &key).await?;
                    let list = versions
                        .iter()
                        .map(|config| {
                            with_active(runtime, config, running == Some(config.common().version))
                        })
                        .collect();
                    ok(&Value::Array(list))
                }
            }
        }
        Endpoint::ConfigVersion => {
            let (kind, key) = connector(&matched)?;
            let version = parse_version(matched.version.as_deref().unwrap_or_default())?;
            let config = context.provider.version(kind, &key, version).await?;
            let running = runtime
                .config(kind, &key)
                .await
                .map(|config| config.common().version);
            ok(&with_active(runtime, &config, running == Some(version)))
        }
        Endpoint::ActiveConfig => {
            let (kind, key) = connector(&matched)?;
            if request.method() == Method::PUT {
                let body = read_json(request, context.http.header_read_timeout.get()).await?;
                let version = body.get("version").and_then(Value::as_u64).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        "expected {\"version\": <unsigned integer>}",
                    )
                })?;
                let config = context.provider.version(kind, &key, version).await?;
                runtime.check_plugin(&config)?;
                // Recorded as active only once it started, under the connector's lock:
                // a version that cannot start is rolled back, and the provider keeps
                // naming the one that runs.
                runtime
                    .activate(config, context.provider.set_active(kind, &key, version))
                    .await?;
                tracing::info!(connector = %key, %kind, version, "activated through the API");
                return no_content();
            }
            let (config, _) = running(context, kind, &key).await?;
            ok(&with_active(runtime, &config, true))
        }
        Endpoint::PluginConfig => {
            let (kind, key) = connector(&matched)?;
            let (config, _) = running(context, kind, &key).await?;
            let format = match query_param(query.as_deref(), "format") {
                Some(text) => Format::parse(&text).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_format",
                        format!("format {text:?}: expected json, yaml, toml or text"),
                    )
                })?,
                None => plugin_config_format(&config),
            };
            let redacted = runtime.redacted(&config);
            let Some(plugin) = redacted.get("plugin_config") else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "plugin_config_not_found",
                    format!("{kind} {key:?} has no plugin_config"),
                ));
            };
            // The config holds what the format cannot (a TOML document is a table, of
            // signed 64-bit integers): the client can ask for another format.
            let text = format.render(plugin).map_err(|reason| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not_representable",
                    reason,
                )
            })?;
            Ok(body_response(StatusCode::OK, format.content_type(), text))
        }
        Endpoint::Transforms => {
            let (kind, key) = connector(&matched)?;
            let (config, _) = running(context, kind, &key).await?;
            let list = config
                .common()
                .transforms
                .0
                .iter()
                .map(|(name, settings)| json!({ "type": name, "config": settings }))
                .collect();
            ok(&Value::Array(list))
        }
        Endpoint::Start
        | Endpoint::Stop
        | Endpoint::Pause
        | Endpoint::Resume
        | Endpoint::Restart => {
            let (kind, key) = connector(&matched)?;
            match matched.endpoint {
                Endpoint::Start => runtime.start_connector(kind, &key).await?,
                Endpoint::Stop => runtime.stop_connector(kind, &key).await?,
                Endpoint::Pause => runtime.pause_connector(kind, &key).await?,
                Endpoint::Resume => runtime.resume_connector(kind, &key).await?,
                _ => runtime.restart_connector(kind, &key).await?,
            }
            tracing::info!(connector = %key, %kind, action = ?matched.endpoint, "lifecycle request through the API");
            let (config, status) = running(context, kind, &key).await?;
            ok(&info(runtime, &config, &status))
        }
    }
}

fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_version",
            format!("version {text:?}: expected an unsigned integer"),
        )
    })
}

fn plugin_config_format(config: &ConnectorConfig) -> Format {
    match config.common().plugin_config_format {
        Some(config_provider::PluginConfigFormat::Json) => Format::Json,
        Some(config_provider::PluginConfigFormat::Yaml) => Format::Yaml,
        Some(config_provider::PluginConfigFormat::Text) => Format::Text,
        Some(config_provider::PluginConfigFormat::Toml) | None => Format::Toml,
    }
}

/// The connector's config and status, or 404.
async fn running(
    context: &ApiContext,
    kind: ConnectorKind,
    key: &str,
) -> Result<(ConnectorConfig, ConnectorStatus), ApiError> {
    let runtime = &context.runtime;
    match (runtime.config(kind, key).await, runtime.status(kind, key)) {
        (Some(config), Some(status)) => Ok((config, status)),
        _ => Err(ApiError::not_found(kind, key)),
    }
}

/// Whether the request says its body is `application/json` (parameters allowed).
fn says_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|declared| declared.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a JSON body of at most [`BODY_LIMIT`] bytes. The body must say it is JSON:
/// a browser sends another site's `text/plain` POST without asking first, but not an
/// `application/json` one, so this keeps web pages from changing configs through a
/// loopback API.
/// The body must arrive within `limit` (`http.header_read_timeout`), or 408.
async fn read_json(
    request: Request<Incoming>,
    limit: std::time::Duration,
) -> Result<Value, ApiError> {
    if !says_json(request.headers()) {
        let declared = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a body with content-type: application/json, got {declared:?}"),
        ));
    }
    let reading = Limited::new(request.into_body(), BODY_LIMIT).collect();
    let collected = tokio::time::timeout(limit, reading)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {limit:?} (http.header_read_timeout)"),
            )
        })?
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body exceeds {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::bad_request("invalid_body", format!("cannot read the body: {error}"))
            }
        })?;
    serde_json::from_slice(&collected.to_bytes())
        .map_err(|error| ApiError::bad_request("invalid_json", error.to_string()))
}

/// `POST .../configs`: the body is a config without `type`, `key` and `version`.
async fn create_config(
    context: &ApiContext,
    kind: ConnectorKind,
    key: &str,
    body: Value,
) -> Answer {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "invalid_configuration",
            "expected a JSON object",
        ));
    };
    for reserved in ["type", "key", "version"] {
        if fields.contains_key(reserved) {
            return Err(ApiError::bad_request(
                "invalid_configuration",
                format!("`{reserved}` comes from the path and the provider; leave it out"),
            ));
        }
    }
    fields.insert("type".to_owned(), json!(kind.as_str()));
    fields.insert("key".to_owned(), json!(key));
    fields.insert("version".to_owned(), json!(0));
    let config: ConnectorConfig = serde_json::from_value(Value::Object(fields))
        .map_err(|error| ApiError::bad_request("invalid_configuration", error.to_string()))?;
    config
        .validate()
        .map_err(|reason| ApiError::bad_request("invalid_configuration", reason))?;
    context.runtime.check_plugin(&config)?;
    let stored = context.provider.create(kind, key, config).await?;
    tracing::info!(connector = %key, %kind, version = stored.common().version, "config version created through the API");
    ok(&with_active(&context.runtime, &stored, false))
}

/// A plugin as `GET /plugins` shows it: what it is, and its config's description.
fn plugin_info(plugin: &runtime_core::Plugin) -> Value {
    let config = match runtime_core::ConfigDescription::of(plugin) {
        Ok(description) => json!({
            "doc": description.doc(),
            "fields": description.fields_json(),
            "schema": description.schema(),
        }),
        Err(problem) => json!({ "error": problem }),
    };
    json!({
        "name": plugin.name(),
        "kind": plugin.kind().as_str(),
        "version": plugin.version(),
        "sdk_version": plugin.sdk_version(),
        "origin": plugin.origin().to_string(),
        "config": config,
    })
}

/// A config as the API shows it: redacted, with `active`.
fn with_active(runtime: &runtime_core::Runtime, config: &ConnectorConfig, active: bool) -> Value {
    let mut value = runtime.redacted(config);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("type");
        fields.insert("active".to_owned(), Value::Bool(active));
    }
    value
}

/// The summary of one connector: upstream's `SinkInfoResponse`/`SourceInfoResponse`
/// fields with their meanings (`id`, `status` in upstream's five words, `last_error`
/// with `message` and `timestamp`, `plugin_config_format`), upstream's `version` (the
/// plugin's, with `version_semver`), and ours beside them (`state`, the finer state;
/// `config_version`; restarts, starts, time in state, throughput).
fn info(
    runtime: &runtime_core::Runtime,
    config: &ConnectorConfig,
    status: &ConnectorStatus,
) -> Value {
    let common = config.common();
    let format = common.plugin_config_format;
    let plugin_version = runtime.plugin_for(config).map_or_else(
        || "unknown".to_owned(),
        |plugin| plugin.version().to_owned(),
    );
    let mut value = json!({
        "id": status.id,
        "key": status.key,
        "name": common.name,
        "path": common.path,
        "enabled": common.enabled,
        "status": status.state.upstream_status(),
        "state": status.state.as_str(),
        "version": plugin_version,
        "config_version": status.version,
        "restarts": status.restarts,
        "starts": status.starts,
        "seconds_in_state": status.seconds_in_state,
        "messages_per_second": status.metrics.messages_per_second,
    });
    if let Some(semver) = semver_number(&plugin_version) {
        value["version_semver"] = json!(semver);
    }
    if let Some(error) = &status.last_error {
        let at = status
            .last_error_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_micros() as u64);
        // Scrubbed again: a secret may have become known after it was recorded.
        value["last_error"] = json!({
            "message": config_provider::scrub_secrets(error),
            "timestamp": at,
        });
    }
    if let Some(format) = format {
        value["plugin_config_format"] = serde_json::to_value(format).unwrap_or_default();
    }
    value
}

/// A `major.minor.patch` version as upstream's number: 1.2.3 is 1002003.
fn semver_number(version: &str) -> Option<u32> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u32>().ok());
    let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || minor > 999 || patch > 999 {
        return None;
    }
    major
        .checked_mul(1_000_000)?
        .checked_add(minor * 1000 + patch)
}

fn metrics(status: &ConnectorStatus) -> Value {
    let m = &status.metrics;
    json!({
        "messages_in": m.messages_in,
        "messages_out": m.messages_out,
        "bytes_in": m.bytes_in,
        "bytes_out": m.bytes_out,
        "errors": m.errors,
        "retries": m.retries,
        "skipped": m.skipped,
        "dead_letters": m.dead_letters,
        "filtered": m.filtered,
        "transforms": status.transforms.iter().map(|t| json!({
            "name": t.name,
            "messages_in": t.messages_in,
            "messages_out": t.messages_out,
            "dropped": t.dropped,
            "failed": t.failed,
        })).collect::<Vec<_>>(),
        "lag": m.lag,
        "group_resets": m.group_resets,
        "messages_per_second": m.messages_per_second,
        "memory_bytes": m.memory_bytes,
        "memory_peak_bytes": m.memory_peak_bytes,
        "memory_budget_bytes": m.memory_budget_bytes,
        "batches": m.batch_latency.count,
        "mean_batch_latency_seconds": if m.batch_latency.count == 0 { 0.0 } else { m.batch_latency.sum_seconds / m.batch_latency.count as f64 },
    })
}

/// `GET /ready`: 200 when Iggy is reachable and every enabled connector runs (a
/// stalled sink does not count as running).
async fn ready(context: &ApiContext) -> Answer {
    let runtime = &context.runtime;
    let mut reasons = Vec::new();
    if !runtime.iggy_connected() {
        reasons.push("not connected to Iggy".to_owned());
    }
    if let Some(problem) = runtime.cluster_problem() {
        reasons.push(problem);
    }
    for status in runtime.statuses() {
        let enabled = runtime
            .config(status.kind, &status.key)
            .await
            .is_some_and(|config| config.common().enabled);
        if enabled && status.state == ConnectorState::Stalled {
            reasons.push(format!(
                "{} {} is stalled: {} unread messages and nothing delivered for {} s",
                status.kind, status.key, status.metrics.lag, status.seconds_in_state
            ));
        } else if status.state == ConnectorState::Error {
            reasons.push(format!(
                "{} {} did not start: {}",
                status.kind,
                status.key,
                status.last_error.as_deref().unwrap_or_default()
            ));
        } else if enabled
            && status.state != ConnectorState::Running
            && status.state != ConnectorState::Standby
        {
            let error = status
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            reasons.push(format!(
                "{} {} is {}{error}",
                status.kind, status.key, status.state
            ));
        }
    }
    for problem in runtime.kindless_configs() {
        reasons.push(format!("a connector config does not run: {problem}"));
    }
    let reasons: Vec<String> = reasons
        .iter()
        .map(|reason| config_provider::scrub_secrets(reason).into_owned())
        .collect();
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(
        status,
        &json!({ "ready": reasons.is_empty(), "reasons": reasons }),
    ))
}

/// `GET /stats`: the runtime and every connector in figures, as upstream's
/// `ConnectorRuntimeStats` and `ConnectorStats` have them (and ours beside them).
async fn stats(context: &ApiContext) -> Answer {
    let runtime = &context.runtime;
    let statuses = runtime.statuses();
    let count = |kind: ConnectorKind, running: bool| {
        statuses
            .iter()
            .filter(|s| s.kind == kind && (!running || s.state.upstream_status() == "running"))
            .count() as u32
    };
    let mut connectors = Vec::new();
    for status in &statuses {
        let Some(config) = runtime.config(status.kind, &status.key).await else {
            continue;
        };
        let mut entry = info(runtime, &config, status);
        let m = &status.metrics;
        entry["connector_type"] = json!(status.kind.as_str());
        match status.kind {
            ConnectorKind::Source => {
                entry["messages_produced"] = json!(m.messages_in);
                entry["messages_sent"] = json!(m.messages_out);
            }
            ConnectorKind::Sink => {
                entry["messages_consumed"] = json!(m.messages_in);
                entry["messages_processed"] = json!(m.messages_out);
            }
        }
        entry["messages_filtered"] = json!(m.filtered);
        entry["errors"] = json!(m.errors);
        entry["metrics"] = metrics(status);
        connectors.push(entry);
    }
    let system = context.system.read();
    let version = env!("CARGO_PKG_VERSION");
    let mut body = json!({
        "connectors_runtime_version": version,
        "process_id": std::process::id(),
        "cpu_usage": system.cpu_usage,
        "total_cpu_usage": system.total_cpu_usage,
        "memory_usage": system.memory_usage,
        "total_memory": system.total_memory,
        "available_memory": system.available_memory,
        "run_time": context.started.elapsed().as_micros() as u64,
        "start_time": context.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default(),
        "iggy_connected": runtime.iggy_connected(),
        "sources_total": count(ConnectorKind::Source, false),
        "sources_running": count(ConnectorKind::Source, true),
        "sinks_total": count(ConnectorKind::Sink, false),
        "sinks_running": count(ConnectorKind::Sink, true),
        "cluster": runtime.cluster_view().map(|view| json!({
            "name": view.cluster,
            "member": view.members.iter().find(|member| member.this_member).map(|member| member.name.clone()),
            "members": view.members.len(),
        })),
        "connectors": connectors,
    });
    if let Some(semver) = semver_number(version) {
        body["connectors_runtime_version_semver"] = json!(semver);
    }
    ok(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_become_upstreams_numbers() {
        assert_eq!(semver_number("1.2.3"), Some(1_002_003));
        assert_eq!(semver_number("0.1.0"), Some(1000));
        assert_eq!(semver_number("0.4.0-edge.1"), Some(4000));
        for bad in ["1.2", "1.2.3.4", "x.y.z", "1.1000.0", "unknown", ""] {
            assert_eq!(semver_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        for host in [
            "localhost",
            "LOCALHOST:8081",
            "127.0.0.1",
            "127.0.0.1:8081",
            "[::1]:8081",
            "[::1]",
        ] {
            assert!(host_is_loopback(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[::]:1",
            "",
        ] {
            assert!(!host_is_loopback(host), "{host}");
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
