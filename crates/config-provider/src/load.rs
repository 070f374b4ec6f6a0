//! Loading the runtime config: built-in defaults < file < environment, with figment.
//!
//! Both the file and the environment are checked against the schema (every key
//! `RuntimeConfig` has) before anything is deserialised, so that every unknown key is
//! reported at once, with the nearest valid key. Environment names are derived from the
//! schema (`IGGY_CONNECTORS_` + the key path in upper case, `.` becoming `_`), so keys
//! that contain `_` map unambiguously, and values are parsed by the type of their key: a
//! password that looks like a number stays a string.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};

use connector_sdk::duration::parse_duration;

use crate::runtime::RuntimeConfig;
use crate::secrets::{self, SecretPaths};

/// Prefix of every environment variable the runtime reads.
pub const ENV_PREFIX: &str = "IGGY_CONNECTORS_";

/// The variable that names the config file.
pub const CONFIG_PATH_ENV: &str = "IGGY_CONNECTORS_CONFIG_PATH";

/// One problem with the configuration: where, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, or the environment variable, the value came from.
    pub source: String,
    /// The key (dot path), if the problem is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: `{key}`: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl ConfigError {
    pub(crate) fn one(
        source: impl Into<String>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            problems: vec![Problem {
                source: source.into(),
                key: key.map(str::to_owned),
                message: message.into(),
            }],
        }
    }
}

/// A loaded runtime config and which of its values are secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The config.
    pub config: RuntimeConfig,
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
    /// Keys whose values came from `${env:...}` or `${file:...}`.
    pub secrets: SecretPaths,
}

impl LoadedConfig {
    /// The config as JSON with every secret replaced by `"******"`: for logs and APIs.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.config).unwrap_or_default();
        for path in secrets::ALWAYS_SECRET
            .iter()
            .copied()
            .chain(self.secrets.iter().map(String::as_str))
        {
            secrets::redact_path(&mut value, path);
        }
        value
    }
}

/// The kind of value a key holds, from the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
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

fn node_of(value: &toml::Value) -> Node {
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
fn schema() -> Node {
    let mut schema = Node::Table(BTreeMap::new());
    for value in RuntimeConfig::every_key() {
        merge_nodes(&mut schema, node_of(&value));
    }
    schema
}

/// Loads the runtime config from `file` (if given) and the process environment.
///
/// A file that was asked for but does not exist is an error.
pub fn load(file: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// [`load`] with an explicit environment, for tests and embedding.
pub fn load_with_env(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigError> {
    let schema = schema();
    let mut problems = Vec::new();
    let mut secret_paths = SecretPaths::new();

    let file_layer = match file {
        Some(path) => match read_file(path, &schema, &mut secret_paths) {
            Ok(dict) => Some((path, dict)),
            Err(error) => {
                problems.extend(error.problems);
                None
            }
        },
        None => None,
    };
    let env_layer = match env_dict(env, &schema, &mut secret_paths) {
        Ok(layer) => layer,
        Err(error) => {
            problems.extend(error.problems);
            EnvLayer::default()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    // Without a file or variable naming it, the provider kind is the default one; it
    // must be present for the tagged enum to deserialise a partial `[connectors]`.
    let mut figment = Figment::from(figment::providers::Serialized::default(
        "connectors.config_type",
        "local",
    ));
    if let Some((path, dict)) = file_layer {
        figment = figment.merge(Layer {
            dict,
            metadata: Metadata::from(
                format!("{}", path.display()),
                figment::Source::File(path.to_path_buf()),
            ),
        });
    }
    let names = env_layer.names.clone();
    figment = figment.merge(Layer {
        dict: env_layer.dict,
        metadata: Metadata::named("environment").interpolater(move |_, keys| {
            let path = keys.join(".");
            names
                .get(&path)
                .cloned()
                .unwrap_or_else(|| format!("{ENV_PREFIX}{}", path.replace('.', "_").to_uppercase()))
        }),
    });
    let config: RuntimeConfig = figment
        .extract()
        .map_err(|error| from_figment(error, file))?;
    let mut loaded = LoadedConfig {
        config,
        file: file.map(Path::to_path_buf),
        secrets: secret_paths,
    };
    crate::validate::validate(&mut loaded)?;
    Ok(loaded)
}

fn source_name(file: Option<&Path>) -> String {
    file.map_or_else(
        || "configuration".to_owned(),
        |path| path.display().to_string(),
    )
}

fn from_figment(error: figment::Error, file: Option<&Path>) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|error| {
            let key = (!error.path.is_empty()).then(|| error.path.join("."));
            let source = match &error.metadata {
                Some(metadata) if metadata.name == "environment" => key
                    .as_ref()
                    .map(|key| {
                        metadata.interpolate(&Profile::Default, &key.split('.').collect::<Vec<_>>())
                    })
                    .unwrap_or_else(|| "environment".to_owned()),
                Some(metadata) if metadata.name != "Serialized" => metadata.name.to_string(),
                _ => source_name(file),
            };
            Problem {
                source,
                key,
                message: error.kind.to_string(),
            }
        })
        .collect();
    ConfigError { problems }
}

/// A figment provider over a ready dictionary.
struct Layer {
    dict: Dict,
    metadata: Metadata,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn read_file(path: &Path, schema: &Node, secrets: &mut SecretPaths) -> Result<Dict, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::one(
            &source,
            None,
            format!("cannot read the config file: {error}"),
        )
    })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|error| ConfigError::one(&source, None, format!("not valid TOML: {error}")))?;
    let mut problems = Vec::new();
    check_keys(&table, schema, "", &source, &mut problems);
    let mut value = toml_to_figment(toml::Value::Table(table));
    secrets::resolve(&mut value, "", &source, secrets, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    match value {
        Value::Dict(_, dict) => Ok(dict),
        _ => Ok(Dict::new()),
    }
}

/// Reports every key of `table` the schema does not have, with the nearest valid key.
fn check_keys(
    table: &toml::Table,
    schema: &Node,
    prefix: &str,
    source: &str,
    problems: &mut Vec<Problem>,
) {
    let Node::Table(known) = schema else {
        return;
    };
    for (key, value) in table {
        let path = join(prefix, key);
        match known.get(key) {
            Some(Node::Table(_)) => match value {
                toml::Value::Table(inner) => {
                    check_keys(inner, &known[key], &path, source, problems);
                }
                _ => problems.push(Problem {
                    source: source.to_owned(),
                    key: Some(path),
                    message: "expected a table (a [section])".to_owned(),
                }),
            },
            Some(Node::Duration) => {
                let parsed = value.as_str().map(parse_duration).unwrap_or_else(|| {
                    Err(format!(
                        "expected a duration such as \"10s\", found {}",
                        describe(value)
                    ))
                });
                if let Err(message) = parsed {
                    problems.push(Problem {
                        source: source.to_owned(),
                        key: Some(path),
                        message,
                    });
                }
            }
            Some(node) => {
                if let Some(expected) = type_mismatch(node, value) {
                    problems.push(Problem {
                        source: source.to_owned(),
                        key: Some(path),
                        message: format!("expected {expected}, found {}", describe(value)),
                    });
                }
            }
            None => {
                let candidates: Vec<String> = known
                    .keys()
                    .map(|candidate| join(prefix, candidate))
                    .collect();
                let hint = crate::suggest::nearest(&path, candidates.iter().map(String::as_str))
                    .map(|near| format!("; did you mean `{near}`?"))
                    .unwrap_or_default();
                problems.push(Problem {
                    source: source.to_owned(),
                    key: Some(path),
                    message: format!("unknown key{hint}"),
                });
            }
        }
    }
}

/// What `node` expects, if `value` is not of that type.
fn type_mismatch(node: &Node, value: &toml::Value) -> Option<&'static str> {
    let fits = match node {
        Node::Bool => value.is_bool(),
        Node::Integer => value.is_integer(),
        Node::String | Node::Duration => value.is_str(),
        Node::List => value.is_array(),
        Node::Table(_) | Node::OpenMap => value.is_table(),
    };
    (!fits).then_some(match node {
        Node::Bool => "a boolean (true or false)",
        Node::Integer => "an integer",
        Node::String | Node::Duration => "a string",
        Node::List => "a list",
        Node::Table(_) | Node::OpenMap => "a table",
    })
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("the string {text:?}"),
        toml::Value::Integer(number) => format!("the integer {number}"),
        toml::Value::Float(number) => format!("the number {number}"),
        toml::Value::Boolean(flag) => format!("the boolean {flag}"),
        toml::Value::Datetime(datetime) => format!("the date {datetime}"),
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn toml_to_figment(value: toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::from(text),
        toml::Value::Integer(number) => Value::from(number),
        toml::Value::Float(number) => Value::from(number),
        toml::Value::Boolean(flag) => Value::from(flag),
        toml::Value::Datetime(datetime) => Value::from(datetime.to_string()),
        toml::Value::Array(items) => Value::Array(
            Tag::Default,
            items.into_iter().map(toml_to_figment).collect(),
        ),
        toml::Value::Table(table) => Value::Dict(
            Tag::Default,
            table
                .into_iter()
                .map(|(key, value)| (key, toml_to_figment(value)))
                .collect(),
        ),
    }
}

#[derive(Default)]
struct EnvLayer {
    dict: Dict,
    /// Key path -> the variable that set it.
    names: BTreeMap<String, String>,
}

/// Every settable key with its variable name.
fn env_names(schema: &Node, prefix: &str, out: &mut BTreeMap<String, (String, Node)>) {
    if let Node::Table(keys) = schema {
        for (key, node) in keys {
            let path = join(prefix, key);
            match node {
                Node::Table(_) => env_names(node, &path, out),
                _ => {
                    let name = format!("{ENV_PREFIX}{}", path.replace('.', "_").to_uppercase());
                    out.insert(name, (path, node.clone()));
                }
            }
        }
    }
}

/// Variables under the prefix that belong to others: the config path and connector
/// overrides (`IGGY_CONNECTORS_SINK_*`, `IGGY_CONNECTORS_SOURCE_*`).
fn is_foreign(name: &str) -> bool {
    name == CONFIG_PATH_ENV
        || name.starts_with("IGGY_CONNECTORS_SINK_")
        || name.starts_with("IGGY_CONNECTORS_SOURCE_")
}

fn env_dict(
    env: impl IntoIterator<Item = (String, String)>,
    schema: &Node,
    secrets: &mut SecretPaths,
) -> Result<EnvLayer, ConfigError> {
    let mut known = BTreeMap::new();
    env_names(schema, "", &mut known);
    let mut layer = EnvLayer::default();
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !is_foreign(name))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let Some((path, node)) = known.get(&name) else {
            let hint = crate::suggest::nearest(&name, known.keys().map(String::as_str))
                .map(|near| format!("; did you mean {near}?"))
                .unwrap_or_default();
            problems.push(Problem {
                source: name.clone(),
                key: None,
                message: format!("unknown variable{hint}"),
            });
            continue;
        };
        let mut value = match parse_env_value(&raw, node) {
            Ok(value) => value,
            Err(message) => {
                problems.push(Problem {
                    source: name.clone(),
                    key: Some(path.clone()),
                    message,
                });
                continue;
            }
        };
        secrets::resolve(&mut value, path, &name, secrets, &mut problems);
        insert_path(&mut layer.dict, path, value);
        layer.names.insert(path.clone(), name);
    }
    if problems.is_empty() {
        Ok(layer)
    } else {
        Err(ConfigError { problems })
    }
}

fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut current = dict;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::Dict(Tag::Default, Dict::new());
        }
        let Value::Dict(_, inner) = entry else {
            return;
        };
        current = inner;
    }
}

/// Parses an environment value by the type of its key.
fn parse_env_value(raw: &str, node: &Node) -> Result<Value, String> {
    let trimmed = raw.trim();
    match node {
        Node::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::from(true)),
            "false" | "0" | "no" | "off" => Ok(Value::from(false)),
            _ => Err(format!("expected a boolean (true or false), got {raw:?}")),
        },
        Node::Integer => trimmed
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Node::String => Ok(Value::from(raw.to_owned())),
        Node::Duration => parse_duration(trimmed).map(|_| Value::from(trimmed.to_owned())),
        Node::List => Ok(Value::Array(
            Tag::Default,
            parse_list(trimmed)?.into_iter().map(Value::from).collect(),
        )),
        Node::OpenMap | Node::Table(_) => {
            let table: toml::Table = toml::from_str(&format!("value = {trimmed}"))
                .ok()
                .and_then(|mut wrapper: toml::Table| wrapper.remove("value"))
                .and_then(|value| value.as_table().cloned())
                .ok_or_else(|| {
                    format!("expected a table such as {{ name = \"value\" }}, got {raw:?}")
                })?;
            Ok(toml_to_figment(toml::Value::Table(table)))
        }
    }
}

/// A list from the environment: `[a, b]`, `a,b`, or with quoted elements
/// (`["a,1", 'b']`) when an element holds a comma. Empty elements are dropped, so an
/// empty value or `[]` is the empty list.
pub(crate) fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut was_quoted = false;
    for c in inner.chars() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                // Spaces before an opening quote separate elements; they are not data.
                if current.trim().is_empty() {
                    current.clear();
                }
                quote = Some(c);
                was_quoted = true;
            }
            (None, ',') => {
                push_item(&mut items, &mut current, &mut was_quoted);
            }
            (None, c) => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in the list {text:?}"));
    }
    push_item(&mut items, &mut current, &mut was_quoted);
    Ok(items)
}

fn push_item(items: &mut Vec<String>, current: &mut String, was_quoted: &mut bool) {
    let item = if *was_quoted {
        current.clone()
    } else {
        current.trim().to_owned()
    };
    if *was_quoted || !item.is_empty() {
        items.push(item);
    }
    current.clear();
    *was_quoted = false;
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
    fn lists_parse_with_and_without_brackets_and_quotes() {
        assert_eq!(parse_list("[a, b]").unwrap(), ["a", "b"]);
        assert_eq!(parse_list("a,b").unwrap(), ["a", "b"]);
        assert_eq!(parse_list(r#"["x,1", 'y']"#).unwrap(), ["x,1", "y"]);
        assert_eq!(parse_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parse_list(r#"[""]"#).unwrap(), [""]);
        assert!(parse_list(r#"["open"#).is_err());
    }

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
