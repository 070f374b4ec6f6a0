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

use crate::overrides::is_connector_override;
use crate::runtime::{ConnectorsConfig, HttpProviderConfig, LocalProviderConfig, RuntimeConfig};
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
    /// Values that were accepted but have no effect, each named by the variable (or
    /// file) that set it: keys of the provider kind not in use (the README's
    /// `IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS` under `config_type = "local"`), and
    /// per-connector overrides under the http provider, which never applies them.
    /// [`load`] does not log them (the caller's logging is usually not set up yet):
    /// call [`LoadedConfig::log_warnings`] once it is, or print them.
    pub warnings: Vec<Problem>,
}

impl LoadedConfig {
    /// Logs each of [`LoadedConfig::warnings`] at warn level, with the variable or file
    /// (`source`) and key as fields.
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(
                source = %warning.source,
                key = warning.key.as_deref().unwrap_or_default(),
                "{warning}"
            );
        }
    }

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

    let mut file_layer = match file {
        Some(path) => match read_file(path, &schema, &mut secret_paths) {
            Ok(dict) => Some((path, dict)),
            Err(error) => {
                problems.extend(error.problems);
                None
            }
        },
        None => None,
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut env_layer = match env_dict(env.iter().cloned(), &schema, &mut secret_paths) {
        Ok(layer) => layer,
        Err(error) => {
            problems.extend(error.problems);
            EnvLayer::default()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    let mut warnings = Vec::new();
    let file_source = file.map(|path| path.display().to_string());
    let provider = choose_provider(
        file_layer.as_mut().map(|(_, dict)| dict),
        file_source.as_deref(),
        &mut env_layer,
        &mut problems,
        &mut warnings,
    );
    if let Some(provider) = &provider
        && provider.kind != "local"
    {
        warn_connector_overrides(&env, provider, &mut warnings);
    }
    // Problems with the provider kind do not stop here: the rest of the config is still
    // extracted and checked below, so that every problem is reported at once.
    let provider = provider.filter(|_| problems.is_empty());
    let origins = Origins {
        file: file_source,
        file_paths: file_layer
            .as_ref()
            .map(|(_, dict)| {
                let mut paths = BTreeSet::new();
                collect_paths(dict, "", &mut paths);
                paths
            })
            .unwrap_or_default(),
        variables: env_layer.names.clone(),
    };

    // `[connectors]` is extracted apart, as the struct of the kind chosen above: through
    // the tagged enum, serde buffers the table and reports a bad value (say a negative
    // `IGGY_CONNECTORS_CONNECTORS_RETRY_MAX_ATTEMPTS`) at `connectors`, losing the key,
    // and so the variable, it came from.
    let mut main = Figment::new();
    let mut connectors = Figment::new();
    let mut has_connectors = false;
    let names = env_layer.names.clone();
    let env_metadata = Metadata::named("environment")
        .interpolater(move |_, keys| variables_under(&names, &keys.join(".")));
    let layers = file_layer
        .map(|(path, dict)| {
            let metadata = Metadata::from(
                format!("{}", path.display()),
                figment::Source::File(path.to_path_buf()),
            );
            (dict, metadata)
        })
        .into_iter()
        .chain([(env_layer.dict, env_metadata)]);
    for (mut dict, metadata) in layers {
        if let Some(Value::Dict(_, mut table)) = dict.remove("connectors") {
            table.remove("config_type");
            has_connectors = true;
            connectors = connectors.merge(Layer {
                dict: table,
                metadata: metadata.clone(),
            });
        }
        main = main.merge(Layer { dict, metadata });
    }
    let config = main.extract::<RuntimeConfig>();
    // Without a usable kind (a problem already), `[connectors]` is left at its default.
    let connectors = match provider {
        Some(provider) if provider.kind == "http" => connectors
            .extract::<HttpProviderConfig>()
            .map(|http| ConnectorsConfig::Http(Box::new(http))),
        Some(_) if has_connectors => connectors
            .extract::<LocalProviderConfig>()
            .map(ConnectorsConfig::Local),
        _ => Ok(ConnectorsConfig::default()),
    };
    let connectors = connectors.map_err(|error| {
        // Extracted at the root of its own figment: put the keys back in place.
        error.into_iter().flat_map(|mut error| {
            error.path.insert(0, "connectors".to_owned());
            from_figment(error, file).problems
        })
    });
    let mut config = match config {
        Ok(config) => config,
        Err(error) => {
            problems.extend(from_figment(error, file).problems);
            if let Err(more) = connectors {
                problems.extend(more);
            }
            return Err(ConfigError { problems });
        }
    };
    match connectors {
        Ok(connectors) => config.connectors = connectors,
        Err(more) => problems.extend(more),
    }
    let mut loaded = LoadedConfig {
        config,
        file: file.map(Path::to_path_buf),
        secrets: secret_paths,
        warnings,
    };
    if let Err(error) = crate::validate::validate(&mut loaded, &origins) {
        problems.extend(error.problems);
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError { problems })
    }
}

/// The variables that set `path` or keys under it (`connectors` when figment reports a
/// whole table): a problem is named by the variables a user actually set, never by a
/// made-up name such as `IGGY_CONNECTORS_CONNECTORS`.
fn variables_under(names: &BTreeMap<String, String>, path: &str) -> String {
    if let Some(name) = names.get(path) {
        return name.clone();
    }
    let inner = format!("{path}.");
    let under: Vec<&str> = names
        .iter()
        .filter(|(key, _)| path.is_empty() || key.starts_with(&inner))
        .map(|(_, name)| name.as_str())
        .collect();
    if under.is_empty() {
        "environment".to_owned()
    } else {
        under.join(", ")
    }
}

/// Every path `dict` sets, tables included (`iggy`, `iggy.tls`, `iggy.tls.enabled`).
fn collect_paths(dict: &Dict, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in dict {
        let path = join(prefix, key);
        if let Value::Dict(_, inner) = value {
            collect_paths(inner, &path, out);
        }
        out.insert(path);
    }
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

/// Where each value came from, so that a problem found once the layers are merged
/// names the variable or file that set the value at fault.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// The config file, if one was read.
    file: Option<String>,
    /// Every path the file sets.
    file_paths: BTreeSet<String>,
    /// Key path -> the variable that set it.
    variables: BTreeMap<String, String>,
}

impl Origins {
    /// The variable that set `path`, if one did.
    pub(crate) fn variable(&self, path: &str) -> Option<&str> {
        self.variables.get(path).map(String::as_str)
    }

    /// Which of `paths` a problem about them all is reported under, and the source
    /// named: the first one a variable set (the environment overrides the file, so its
    /// value is the one in force), else the first one the file set, else the first
    /// (a default), under the file or "configuration".
    pub(crate) fn blame<'a>(&self, paths: &[&'a str]) -> (String, &'a str) {
        if let Some((path, name)) = paths
            .iter()
            .find_map(|path| Some((*path, self.variable(path)?)))
        {
            return (name.to_owned(), path);
        }
        let first = paths.first().copied().unwrap_or_default();
        let path = paths
            .iter()
            .copied()
            .find(|path| self.file_paths.contains(*path))
            .unwrap_or(first);
        let source = self
            .file
            .clone()
            .unwrap_or_else(|| "configuration".to_owned());
        (source, path)
    }
}

/// The provider kind in force and what chose it.
struct ProviderChoice {
    /// `"local"` or `"http"`.
    kind: String,
    /// The variable or file that set `connectors.config_type`; `None`: the default.
    by: Option<Chosen>,
}

enum Chosen {
    Variable(String),
    File(String),
}

impl ProviderChoice {
    /// How the kind came about, for messages: `connectors.config_type is "local" (the
    /// default)`.
    fn describe(&self) -> String {
        let kind = &self.kind;
        match &self.by {
            None => format!("connectors.config_type is \"{kind}\" (the default)"),
            Some(Chosen::Variable(name)) => {
                format!("{name} sets connectors.config_type to \"{kind}\"")
            }
            Some(Chosen::File(file)) => {
                format!("{file} sets connectors.config_type = \"{kind}\"")
            }
        }
    }
}

/// The `connectors.config_type` string a layer sets, if it sets one.
fn config_type(dict: &Dict) -> Option<&str> {
    match dict.get("connectors")? {
        Value::Dict(_, connectors) => connectors.get("config_type")?.as_str(),
        _ => None,
    }
}

/// Decides the provider kind (environment over file over the default `"local"`) and
/// takes out of both layers the `[connectors]` keys only the other kind reads, so that
/// the tagged enum does not refuse them as "unknown field" under `connectors` (naming
/// no variable). A variable for the other kind is accepted with a warning: it is
/// inert, and environments are shared between deployments (the README's example sets
/// `IGGY_CONNECTORS_CONNECTORS_REQUEST_HEADERS` without choosing the http provider). A
/// file key for the other kind is refused when the file or the default chose the
/// kind, since the file then contradicts itself; when a variable switched the kind,
/// the file's key is inert and warned about. `None` when the kind is not a known one
/// (a problem).
fn choose_provider(
    mut file: Option<&mut Dict>,
    file_source: Option<&str>,
    env: &mut EnvLayer,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<ProviderChoice> {
    let kinds = crate::runtime::ConnectorsConfig::keys_by_kind();
    let from_env = config_type(&env.dict).map(|kind| {
        let name = env
            .names
            .get("connectors.config_type")
            .cloned()
            .unwrap_or_else(|| variable_of("connectors.config_type"));
        (kind.to_owned(), Chosen::Variable(name))
    });
    let from_file = file.as_deref().and_then(config_type).map(|kind| {
        let source = file_source.unwrap_or("configuration").to_owned();
        (kind.to_owned(), Chosen::File(source))
    });
    let choice = match from_env.or(from_file) {
        Some((kind, by)) => ProviderChoice { kind, by: Some(by) },
        None => ProviderChoice {
            kind: "local".to_owned(),
            by: None,
        },
    };
    let Some((_, own_keys)) = kinds.iter().find(|(kind, _)| *kind == choice.kind) else {
        let source = match &choice.by {
            Some(Chosen::Variable(name) | Chosen::File(name)) => name.clone(),
            None => "configuration".to_owned(),
        };
        let names: Vec<String> = kinds.iter().map(|(kind, _)| format!("{kind:?}")).collect();
        problems.push(Problem {
            source,
            key: Some("connectors.config_type".to_owned()),
            message: format!("expected {}, got {:?}", names.join(" or "), choice.kind),
        });
        return None;
    };
    // The kind that reads a key, for messages.
    let reader = |key: &str| {
        kinds
            .iter()
            .find(|(_, keys)| keys.contains(key))
            .map_or("another", |(kind, _)| kind.as_str())
    };

    // Variables: inert, warned about, taken out.
    let mut inert = BTreeSet::new();
    for (path, name) in &env.names {
        let Some(key) = path
            .strip_prefix("connectors.")
            .and_then(|rest| rest.split('.').next())
        else {
            continue;
        };
        if own_keys.contains(key) {
            continue;
        }
        let other = reader(key);
        warnings.push(Problem {
            source: name.clone(),
            key: Some(path.clone()),
            message: format!(
                "only the {other} provider reads it, and {}, so it is ignored; set {}={other} to use it",
                choice.describe(),
                variable_of("connectors.config_type"),
            ),
        });
        inert.insert(key.to_owned());
    }
    env.names.retain(|path, _| {
        path.strip_prefix("connectors.")
            .and_then(|rest| rest.split('.').next())
            .is_none_or(|key| !inert.contains(key))
    });
    remove_connectors_keys(&mut env.dict, &inert);

    // The file: refused unless a variable switched the kind.
    if let Some(dict) = file.as_deref_mut() {
        let source = file_source.unwrap_or("configuration");
        let foreign: BTreeSet<String> = match dict.get("connectors") {
            Some(Value::Dict(_, connectors)) => connectors
                .keys()
                .filter(|key| !own_keys.contains(*key))
                .cloned()
                .collect(),
            _ => BTreeSet::new(),
        };
        for key in &foreign {
            let other = reader(key);
            let path = format!("connectors.{key}");
            match &choice.by {
                Some(Chosen::Variable(_)) => warnings.push(Problem {
                    source: source.to_owned(),
                    key: Some(path),
                    message: format!(
                        "only the {other} provider reads it, and {}, so it is ignored",
                        choice.describe()
                    ),
                }),
                Some(Chosen::File(_)) => problems.push(Problem {
                    source: source.to_owned(),
                    key: Some(path),
                    message: format!(
                        "only the {other} provider reads it, but this file sets connectors.config_type = \"{}\": set config_type = \"{other}\" in [connectors], or remove the key",
                        choice.kind
                    ),
                }),
                None => problems.push(Problem {
                    source: source.to_owned(),
                    key: Some(path),
                    message: format!(
                        "only the {other} provider reads it, but {}: set config_type = \"{other}\" in [connectors] (or {}={other}), or remove the key",
                        choice.describe(),
                        variable_of("connectors.config_type"),
                    ),
                }),
            }
        }
        if matches!(choice.by, Some(Chosen::Variable(_))) {
            remove_connectors_keys(dict, &foreign);
        }
    }

    // A required key of the chosen kind (the http provider's `base_url`) is asked for
    // here, by the variable or file that chose the kind: serde would report it as
    // "missing field" under `connectors`, naming neither.
    if choice.kind == "http" {
        let in_env = env.names.contains_key("connectors.base_url");
        let in_file = file.as_deref().is_some_and(|dict| {
            matches!(dict.get("connectors"), Some(Value::Dict(_, connectors)) if connectors.contains_key("base_url"))
        });
        if !in_env && !in_file {
            let source = match &choice.by {
                Some(Chosen::Variable(name) | Chosen::File(name)) => name.clone(),
                None => "configuration".to_owned(),
            };
            problems.push(Problem {
                source,
                key: Some("connectors.base_url".to_owned()),
                message: format!(
                    "is required with the http provider: set {} to the configuration service's URL (or base_url in [connectors])",
                    variable_of("connectors.base_url")
                ),
            });
        }
    }
    Some(choice)
}

/// Removes `keys` from the `[connectors]` table of `dict` (and the table, if emptied).
fn remove_connectors_keys(dict: &mut Dict, keys: &BTreeSet<String>) {
    if keys.is_empty() {
        return;
    }
    if let Some(Value::Dict(_, connectors)) = dict.get_mut("connectors") {
        connectors.retain(|key, _| !keys.contains(key));
        if connectors.is_empty() {
            dict.remove("connectors");
        }
    }
}

/// Per-connector overrides (`IGGY_CONNECTORS_SINK_*`, `IGGY_CONNECTORS_SOURCE_*`) are
/// applied by the local provider only; under any other, each one set is inert.
fn warn_connector_overrides(
    env: &[(String, String)],
    provider: &ProviderChoice,
    warnings: &mut Vec<Problem>,
) {
    let mut names: Vec<&str> = env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| is_connector_override(name))
        .collect();
    names.sort_unstable();
    for name in names {
        warnings.push(Problem {
            source: name.to_owned(),
            key: None,
            message: format!(
                "per-connector overrides apply only to the local provider's connectors, and {}, so it is ignored; change the connector's config in the configuration service instead",
                provider.describe()
            ),
        });
    }
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
                message: describe_kind(&error.kind),
            }
        })
        .collect();
    ConfigError { problems }
}

/// What figment found wrong, without its doubled quoting of the choices ("expected
/// ``text` or `json``").
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let choices = |expected: &[&str]| {
        expected
            .iter()
            .map(|choice| format!("{choice:?}"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match kind {
        Kind::UnknownVariant(found, expected) => {
            format!("expected {}, got {found:?}", choices(expected))
        }
        Kind::UnknownField(found, expected) => {
            format!("unknown key {found:?}; expected {}", choices(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            let range = match expected.as_str() {
                "u8" => Some(u64::from(u8::MAX)),
                "u16" => Some(u64::from(u16::MAX)),
                "u32" => Some(u64::from(u32::MAX)),
                "u64" => Some(u64::MAX),
                _ => None,
            };
            match range {
                Some(max) => format!("expected a whole number from 0 to {max}, got {actual}"),
                None => kind.to_string(),
            }
        }
        other => other.to_string(),
    }
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
fn env_names(schema: &Node, prefix: &str, out: &mut BTreeMap<String, (String, Node)>) {
    let mut keys = BTreeMap::new();
    settable_keys(schema, prefix, &mut keys);
    out.extend(
        keys.into_iter()
            .map(|(path, node)| (variable_of(&path), (path, node))),
    );
}

/// Variables under the prefix that belong to others: the config path and connector
/// overrides (`IGGY_CONNECTORS_SINK_*`, `IGGY_CONNECTORS_SOURCE_*`).
fn is_foreign(name: &str) -> bool {
    name == CONFIG_PATH_ENV || is_connector_override(name)
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
