//! Loading the runtime config: built-in defaults < file < environment, with figment.
//!
//! Both the file and the environment are checked against the schema (every key
//! `RuntimeConfig` has) before anything is deserialised, so that every unknown key is
//! reported at once, with the nearest valid key. Environment names are derived from the
//! schema (`IGGY_CONNECTORS_` + the key path in upper case, `.` becoming `_`), so keys
//! that contain `_` map unambiguously, and values are parsed by the type of their key: a
//! password that looks like a number stays a string.
//!
//! This module is the entry point ([`load`], [`LoadedConfig`]) and the figment
//! layering; the parts are `schema` (the keys, their kinds and variable names, walked
//! from the config types), `file` and `env` (the two layers, each checked against the
//! schema), `provider_kind` (which connector provider is in force, and the keys only
//! the other one reads) and `report` (problems, and the variable or file each one
//! names).
//!
//! `secrets.require_private_files` is read from the file and the environment before
//! either layer resolves a secret, since the config's own keys may be `${file:...}`
//! references (the Dockerfile's `http.api_key`).

mod env;
mod file;
mod provider_kind;
mod report;
mod schema;

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::runtime::{ConnectorsConfig, HttpProviderConfig, LocalProviderConfig, RuntimeConfig};
use crate::secrets::{self, REQUIRE_PRIVATE_FILES_KEY, Resolver, SecretPaths};

use env::{EnvLayer, env_dict, parse_bool};
use file::{check_file, read_table};
use provider_kind::{choose_provider, warn_connector_overrides};
use report::{from_figment, variables_under};

pub(crate) use env::parse_list;
pub(crate) use report::Origins;
pub use report::{ConfigError, Problem};
pub(crate) use schema::{Node, env_field, node_of, settable_keys, variable_of};
pub use schema::{config_keys, environment_variables};

/// Prefix of every environment variable the runtime reads.
pub const ENV_PREFIX: &str = "IGGY_CONNECTORS_";

/// The variable that names the config file.
pub const CONFIG_PATH_ENV: &str = "IGGY_CONNECTORS_CONFIG_PATH";

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
    /// per-connector overrides under the http provider, which never applies them. And
    /// `${file:...}` secrets whose file its group or other users may access (refused
    /// instead with `secrets.require_private_files = true`), with the mode and the fix.
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
    let schema = schema::schema();
    let mut problems = Vec::new();

    let table = match file.map(|path| (path, read_table(path))) {
        Some((path, Ok(table))) => Some((path, table)),
        Some((_, Err(error))) => {
            problems.extend(error.problems);
            None
        }
        None => None,
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    // Known before any secret is resolved: the config's own keys may be references.
    let mut resolver = Resolver::new(require_private_files(
        table.as_ref().map(|(_, table)| table),
        &env,
    ));
    let mut file_layer = match table {
        Some((path, table)) => match check_file(path, table, &schema, &mut resolver) {
            Ok(dict) => Some((path, dict)),
            Err(error) => {
                problems.extend(error.problems);
                None
            }
        },
        None => None,
    };
    let mut env_layer = match env_dict(env.iter().cloned(), &schema, &mut resolver) {
        Ok(layer) => layer,
        Err(error) => {
            problems.extend(error.problems);
            EnvLayer::default()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }

    let Resolver {
        secrets: secret_paths,
        mut warnings,
        ..
    } = resolver;
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
    let origins = Origins::new(
        file_source,
        file_layer.as_ref().map(|(_, dict)| dict),
        env_layer.names.clone(),
    );

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
    secrets::remember_always_secret(
        &mut serde_json::to_value(&loaded.config).unwrap_or_default(),
        &mut serde_json::to_value(RuntimeConfig::default()).unwrap_or_default(),
    );
    if let Err(error) = crate::validate::validate(&mut loaded, &origins) {
        problems.extend(error.problems);
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError { problems })
    }
}

/// `secrets.require_private_files`, read from the environment (which overrides the
/// file) or else the file, before either layer is checked: a value of the wrong kind
/// counts as unset here, and its layer reports it.
fn require_private_files(file: Option<&toml::Table>, env: &[(String, String)]) -> bool {
    let variable = variable_of(REQUIRE_PRIVATE_FILES_KEY);
    let from_env = env
        .iter()
        .filter(|(name, _)| *name == variable)
        .find_map(|(_, raw)| parse_bool(raw).ok());
    let from_file = || {
        let (table, key) = REQUIRE_PRIVATE_FILES_KEY.split_once('.')?;
        file?.get(table)?.get(key)?.as_bool()
    };
    from_env
        .or_else(from_file)
        .unwrap_or(RuntimeConfig::default().secrets.require_private_files)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_files_flag_is_a_key_of_the_schema() {
        let Node::Table(tables) = schema::schema() else {
            panic!("the schema is a table");
        };
        let (table, key) = REQUIRE_PRIVATE_FILES_KEY.split_once('.').unwrap();
        let Some(Node::Table(keys)) = tables.get(table) else {
            panic!("no table {table}");
        };
        assert_eq!(keys.get(key), Some(&Node::Bool));
    }

    #[test]
    fn the_private_files_flag_comes_from_the_environment_over_the_file() {
        let file: toml::Table = toml::from_str("[secrets]\nrequire_private_files = true").unwrap();
        let variable = variable_of(REQUIRE_PRIVATE_FILES_KEY);
        let set = |value: &str| vec![(variable.clone(), value.to_owned())];
        assert!(!require_private_files(None, &[]));
        assert!(require_private_files(Some(&file), &[]));
        assert!(!require_private_files(Some(&file), &set("off")));
        assert!(require_private_files(None, &set("1")));
        // A bad value is the environment layer's problem; the file's value stands.
        assert!(require_private_files(Some(&file), &set("maybe")));
    }
}
