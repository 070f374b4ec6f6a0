//! The schema of the runtime config, walked from its types.
//!
//! [`RuntimeConfig::every_key`] writes a config with every key set (of every provider
//! kind); each value's kind ([`Node`]) is read from what it is. From that walk come
//! the keys a file may set, the environment variable of each (`IGGY_CONNECTORS_` + the
//! key path in upper case, `.` becoming `_`) and the kind its value is parsed as;
//! per-connector overrides are derived by the same walk.

use std::collections::{BTreeMap, BTreeSet};

use connector_sdk::duration::parse_duration;

use super::ENV_PREFIX;
use crate::runtime::RuntimeConfig;

/// The kind of value a key holds, from the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Bool,
    Integer,
    String,
    /// A string holding a duration (`"10s"`).
    Duration,
    List,
    /// A table with fixed keys.
    Table(BTreeMap<String, Node>),
    /// A table whose keys are the user's (e.g. request headers).
    OpenMap,
}

/// The schema of a value a config with every key set was written as: each key's kind
/// of value, by what the value is (an empty table is an open one, whose keys are the
/// user's).
pub(crate) fn node_of(value: &toml::Value) -> Node {
    match value {
        toml::Value::Boolean(_) => Node::Bool,
        toml::Value::Integer(_) => Node::Integer,
        toml::Value::Array(_) => Node::List,
        toml::Value::Table(table) if table.is_empty() => Node::OpenMap,
        toml::Value::String(text) if parse_duration(text).is_ok() => Node::Duration,
        toml::Value::Table(table) => Node::Table(
            table
                .iter()
                .map(|(key, value)| (key.clone(), node_of(value)))
                .collect(),
        ),
        _ => Node::String,
    }
}

fn merge_nodes(into: &mut Node, other: Node) {
    match (into, other) {
        (Node::Table(into), Node::Table(other)) => {
            for (key, node) in other {
                match into.get_mut(&key) {
                    Some(existing) => merge_nodes(existing, node),
                    None => {
                        into.insert(key, node);
                    }
                }
            }
        }
        (into, other) => *into = other,
    }
}

/// The schema of the runtime config: every key of every provider kind.
pub(super) fn schema() -> Node {
    let mut schema = Node::Table(BTreeMap::new());
    for value in RuntimeConfig::every_key() {
        merge_nodes(&mut schema, node_of(&value));
    }
    schema
}

/// The environment variable of a key path: `iggy.tls.ca_file` ->
/// `IGGY_CONNECTORS_IGGY_TLS_CA_FILE`.
pub(crate) fn variable_of(path: &str) -> String {
    format!("{ENV_PREFIX}{}", env_field(path))
}

/// How a key path is spelt in a variable's name: `iggy.tls.ca_file` -> `IGGY_TLS_CA_FILE`.
pub(crate) fn env_field(path: &str) -> String {
    path.replace('.', "_").to_uppercase()
}

/// `key` under `prefix`, as a dot path.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Every key of `schema` one variable sets, by dot path (under `prefix`), with the
/// kind of value it holds: the keys of fixed tables, walked into, and the rest whole
/// (an open table too). Connector overrides are derived by the same walk.
pub(crate) fn settable_keys(schema: &Node, prefix: &str, out: &mut BTreeMap<String, Node>) {
    if let Node::Table(keys) = schema {
        for (key, node) in keys {
            let path = join(prefix, key);
            match node {
                Node::Table(_) => settable_keys(node, &path, out),
                _ => {
                    out.insert(path, node.clone());
                }
            }
        }
    }
}

/// Every settable key with its variable name.
pub(super) fn env_names(schema: &Node, prefix: &str, out: &mut BTreeMap<String, (String, Node)>) {
    let mut keys = BTreeMap::new();
    settable_keys(schema, prefix, &mut keys);
    out.extend(
        keys.into_iter()
            .map(|(path, node)| (variable_of(&path), (path, node))),
    );
}

/// Every key of the runtime config as a dot path (`http.cors.allowed_origins`).
pub fn config_keys() -> BTreeSet<String> {
    let mut known = BTreeMap::new();
    env_names(&schema(), "", &mut known);
    known.into_values().map(|(path, _)| path).collect()
}

/// Every environment variable name of the runtime config, for documentation and tests.
pub fn environment_variables() -> BTreeSet<String> {
    let mut known = BTreeMap::new();
    env_names(&schema(), "", &mut known);
    known.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_variable_including_nested_and_underscored_ones() {
        let names = environment_variables();
        for expected in [
            "IGGY_CONNECTORS_IGGY_TLS_ENABLED",
            "IGGY_CONNECTORS_HTTP_CORS_ALLOWED_ORIGINS",
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_DIR",
            "IGGY_CONNECTORS_CONNECTORS_CONFIG_TYPE",
            "IGGY_CONNECTORS_CONNECTORS_BASE_URL",
            "IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS",
            "IGGY_CONNECTORS_CONNECTORS_RESPONSE_DATA_PATH",
            "IGGY_CONNECTORS_CONNECTORS_URL_TEMPLATES_GET_ACTIVE_CONFIGS",
            "IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS",
            "IGGY_CONNECTORS_HTTP_METRICS_ENDPOINT",
            "IGGY_CONNECTORS_LOGGING_FORMAT",
            "IGGY_CONNECTORS_STATE_PATH",
        ] {
            assert!(
                names.contains(expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
