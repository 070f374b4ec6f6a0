//! Which connector provider is in force, and the keys only the other one reads.
//!
//! `connectors.config_type` (environment over file over the default `"local"`) picks
//! the provider; the `[connectors]` keys of the other kind are taken out of the layers
//! before figment sees them, with a warning or a problem naming the variable or file
//! that set them, and a per-connector override under the http provider is warned
//! about, since only the local provider applies them.

use std::collections::BTreeSet;

use figment::value::{Dict, Value};

use super::env::EnvLayer;
use super::report::Problem;
use super::schema::variable_of;
use crate::overrides::is_connector_override;

/// The provider kind in force and what chose it.
pub(super) struct ProviderChoice {
    /// `"local"` or `"http"`.
    pub(super) kind: String,
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
pub(super) fn choose_provider(
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
pub(super) fn warn_connector_overrides(
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
