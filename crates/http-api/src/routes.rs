//! Every route, once: the router matches requests against [`ROUTES`], and a test checks
//! the OpenAPI document against the same table.

use connector_sdk::ConnectorKind;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Root,
    Health,
    Ready,
    Stats,
    Cluster,
    Metrics,
    OpenApi,
    Plugins,
    ValidatePluginConfig,
    List,
    Details,
    Configs,
    ActiveConfig,
    PluginConfig,
    ConfigVersion,
    Transforms,
    Start,
    Stop,
    Pause,
    Resume,
    Restart,
}

/// A route: its path template and methods. In templates, `{kind}` stands for `sinks`
/// and `sources` alike; `{key}`, `{name}` (a plugin's) and `{version}` are path
/// parameters.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// The path template, e.g. `/{kind}/{key}/configs`.
    pub path: &'static str,
    /// The methods it answers.
    pub methods: &'static [&'static str],
    pub(crate) endpoint: Endpoint,
}

const fn route(
    path: &'static str,
    methods: &'static [&'static str],
    endpoint: Endpoint,
) -> RouteSpec {
    RouteSpec {
        path,
        methods,
        endpoint,
    }
}

/// Every route, in matching order (literal segments before parameters). The metrics
/// route answers at `[http.metrics] endpoint` (default `/metrics`), when enabled.
pub const ROUTES: [RouteSpec; 21] = [
    route("/", &["GET"], Endpoint::Root),
    route("/health", &["GET"], Endpoint::Health),
    route("/ready", &["GET"], Endpoint::Ready),
    route("/stats", &["GET"], Endpoint::Stats),
    route("/cluster", &["GET"], Endpoint::Cluster),
    route("/metrics", &["GET"], Endpoint::Metrics),
    route("/openapi.json", &["GET"], Endpoint::OpenApi),
    route("/plugins", &["GET"], Endpoint::Plugins),
    route(
        "/plugins/{name}/validate",
        &["POST"],
        Endpoint::ValidatePluginConfig,
    ),
    route("/{kind}", &["GET"], Endpoint::List),
    route("/{kind}/{key}", &["GET"], Endpoint::Details),
    route(
        "/{kind}/{key}/configs",
        &["GET", "POST", "DELETE"],
        Endpoint::Configs,
    ),
    route(
        "/{kind}/{key}/configs/active",
        &["GET", "PUT"],
        Endpoint::ActiveConfig,
    ),
    route(
        "/{kind}/{key}/configs/plugin",
        &["GET"],
        Endpoint::PluginConfig,
    ),
    route(
        "/{kind}/{key}/configs/{version}",
        &["GET"],
        Endpoint::ConfigVersion,
    ),
    route("/{kind}/{key}/transforms", &["GET"], Endpoint::Transforms),
    route("/{kind}/{key}/start", &["POST"], Endpoint::Start),
    route("/{kind}/{key}/stop", &["POST"], Endpoint::Stop),
    route("/{kind}/{key}/pause", &["POST"], Endpoint::Pause),
    route("/{kind}/{key}/resume", &["POST"], Endpoint::Resume),
    route("/{kind}/{key}/restart", &["POST"], Endpoint::Restart),
];

/// A request path matched to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Matched {
    pub(crate) endpoint: Endpoint,
    pub(crate) methods: &'static [&'static str],
    pub(crate) kind: Option<ConnectorKind>,
    pub(crate) key: Option<String>,
    pub(crate) version: Option<String>,
}

/// Matches `path` (without its query); `metrics` is where the metrics route answers,
/// `None` when it is off.
pub(crate) fn match_path(path: &str, metrics: Option<&str>) -> Option<Matched> {
    if metrics == Some(path) {
        return Some(Matched {
            endpoint: Endpoint::Metrics,
            methods: &["GET"],
            kind: None,
            key: None,
            version: None,
        });
    }
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect::<Option<_>>()?;
    'routes: for spec in &ROUTES {
        if spec.endpoint == Endpoint::Metrics {
            continue;
        }
        let template: Vec<&str> = spec.path[1..].split('/').collect();
        if template.len() != segments.len() {
            continue;
        }
        let mut matched = Matched {
            endpoint: spec.endpoint,
            methods: spec.methods,
            kind: None,
            key: None,
            version: None,
        };
        for (part, segment) in template.iter().zip(&segments) {
            match *part {
                "{kind}" => {
                    matched.kind = Some(match segment.as_str() {
                        "sinks" => ConnectorKind::Sink,
                        "sources" => ConnectorKind::Source,
                        _ => continue 'routes,
                    });
                }
                "{key}" | "{name}" if !segment.is_empty() => matched.key = Some(segment.clone()),
                "{version}" if !segment.is_empty() => matched.version = Some(segment.clone()),
                literal if literal == segment => {}
                _ => continue 'routes,
            }
        }
        return Some(matched);
    }
    None
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            // Two hex digits: `from_str_radix` alone would take a sign (`%+1`).
            let hex = segment
                .get(index + 1..index + 3)
                .filter(|hex| hex.bytes().all(|byte| byte.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in a query string (`a=1&b=2`), percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(&value.replace('+', " ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_routes_win_over_parameters() {
        let active = match_path("/sinks/s1/configs/active", Some("/metrics")).unwrap();
        assert_eq!(active.endpoint, Endpoint::ActiveConfig);
        let version = match_path("/sources/s1/configs/7", Some("/metrics")).unwrap();
        assert_eq!(version.endpoint, Endpoint::ConfigVersion);
        assert_eq!(version.kind, Some(ConnectorKind::Source));
        assert_eq!(version.version.as_deref(), Some("7"));
    }

    #[test]
    fn unknown_paths_and_kinds_do_not_match() {
        for path in [
            "/nope",
            "/widgets/a",
            "/sinks/",
            "/sinks/a/b",
            "",
            "/sinks/a%zz",
            "/sinks/%+1",
            "/sinks/%-1",
        ] {
            assert_eq!(match_path(path, Some("/metrics")), None, "{path}");
        }
        assert_eq!(match_path("/metrics", None), None, "metrics off");
        let custom = match_path("/prom", Some("/prom")).unwrap();
        assert_eq!(custom.endpoint, Endpoint::Metrics);
    }

    #[test]
    fn keys_are_percent_decoded() {
        let matched = match_path("/sinks/a%2Fb/configs", None).unwrap();
        assert_eq!(matched.key.as_deref(), Some("a/b"));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("format=yaml&x=1"), "format").as_deref(),
            Some("yaml")
        );
        assert_eq!(query_param(Some("version=3"), "format"), None);
        assert_eq!(query_param(None, "format"), None);
    }
}
