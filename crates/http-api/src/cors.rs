//! CORS exactly as `[http.cors]` says: preflight answers and headers on responses.

use config_provider::CorsConfig;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const MAX_AGE: &str = "access-control-max-age";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";

/// Whether a request is a CORS preflight.
pub(crate) fn is_preflight(headers: &HeaderMap) -> bool {
    headers.contains_key(hyper::header::ORIGIN) && headers.contains_key(REQUEST_METHOD)
}

/// The `Origin` of a request a web page of another site made, when `[http.cors]` does
/// not allow that site: a browser sends a "simple" cross-site POST without asking
/// first, so the answer being unreadable to the page does not stop its effect. `None`
/// for requests from no browser (no `Origin`), from the API's own origin, or from an
/// allowed one.
pub(crate) fn refused_origin(cors: &CorsConfig, request: &HeaderMap) -> Option<String> {
    let origin = request.get(hyper::header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    if cors.enabled && origin_allowed(cors, origin) {
        return None;
    }
    let authority = origin.split_once("://").map(|(_, authority)| authority);
    let host = request
        .get(hyper::header::HOST)
        .and_then(|host| host.to_str().ok());
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => None,
        _ => Some(origin.to_owned()),
    }
}

fn origin_allowed(cors: &CorsConfig, origin: &str) -> bool {
    cors.allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The `Access-Control-Allow-Origin` (and `Vary`) for `origin`.
fn allow_origin(cors: &CorsConfig, origin: &str, headers: &mut HeaderMap) {
    let wildcard = cors.allowed_origins.iter().any(|allowed| allowed == "*");
    if wildcard && !cors.allow_credentials {
        insert(headers, ALLOW_ORIGIN, "*");
    } else {
        // Credentials forbid `*`: echo the origin, and tell caches it varies.
        insert(headers, ALLOW_ORIGIN, origin);
        headers.append(hyper::header::VARY, HeaderValue::from_static("origin"));
    }
    if cors.allow_credentials {
        insert(headers, ALLOW_CREDENTIALS, "true");
    }
}

/// Answers a preflight: `Ok(headers)` for a 204, `Err(reason)` for a 403.
pub(crate) fn preflight(cors: &CorsConfig, request: &HeaderMap) -> Result<HeaderMap, String> {
    let text = |name: &str| {
        request
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let origin = text(hyper::header::ORIGIN.as_str());
    if !origin_allowed(cors, &origin) {
        return Err(format!("origin {origin:?} is not allowed"));
    }
    let method = text(REQUEST_METHOD);
    if !cors
        .allowed_methods
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&method))
    {
        return Err(format!("method {method:?} is not allowed"));
    }
    let any_header = cors.allowed_headers.iter().any(|allowed| allowed == "*");
    let requested = text(REQUEST_HEADERS);
    for header in requested
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        if !any_header
            && !cors
                .allowed_headers
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(header))
        {
            return Err(format!("header {header:?} is not allowed"));
        }
    }
    let mut headers = HeaderMap::new();
    allow_origin(cors, &origin, &mut headers);
    insert(
        &mut headers,
        ALLOW_METHODS,
        &cors.allowed_methods.join(", "),
    );
    let allowed_headers = if any_header {
        requested
    } else {
        cors.allowed_headers.join(", ")
    };
    if !allowed_headers.is_empty() {
        insert(&mut headers, ALLOW_HEADERS, &allowed_headers);
    }
    if cors.allow_private_network && text(REQUEST_PRIVATE_NETWORK).eq_ignore_ascii_case("true") {
        insert(&mut headers, ALLOW_PRIVATE_NETWORK, "true");
    }
    insert(&mut headers, MAX_AGE, "600");
    Ok(headers)
}

/// Adds the CORS headers of an actual (non-preflight) request from an allowed origin.
pub(crate) fn decorate(cors: &CorsConfig, request: &HeaderMap, response: &mut HeaderMap) {
    let Some(origin) = request
        .get(hyper::header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return;
    };
    if !origin_allowed(cors, origin) {
        return;
    }
    allow_origin(cors, origin, response);
    let exposed: Vec<&str> = cors
        .exposed_headers
        .iter()
        .map(|header| header.trim())
        .filter(|header| !header.is_empty())
        .collect();
    if !exposed.is_empty() {
        insert(response, EXPOSE_HEADERS, &exposed.join(", "));
    }
}
