//! Problems with a configuration and where they came from.
//!
//! [`Problem`] and [`ConfigError`] (every problem at once); [`Origins`], which names the
//! variable or file that set a value found at fault once the layers are merged; and
//! figment's errors turned into problems, each named by the variable or file behind
//! its key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use figment::Profile;
use figment::value::{Dict, Value};

use super::schema::join;

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

/// The variables that set `path` or keys under it (`connectors` when figment reports a
/// whole table): a problem is named by the variables a user actually set, never by a
/// made-up name such as `IGGY_CONNECTORS_CONNECTORS`.
pub(super) fn variables_under(names: &BTreeMap<String, String>, path: &str) -> String {
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
    /// The origins of the layers: the file's name and what it sets (if one was read),
    /// and the variable that set each key path.
    pub(super) fn new(
        file: Option<String>,
        file_dict: Option<&Dict>,
        variables: BTreeMap<String, String>,
    ) -> Self {
        let mut file_paths = BTreeSet::new();
        if let Some(dict) = file_dict {
            collect_paths(dict, "", &mut file_paths);
        }
        Origins {
            file,
            file_paths,
            variables,
        }
    }

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

fn source_name(file: Option<&Path>) -> String {
    file.map_or_else(
        || "configuration".to_owned(),
        |path| path.display().to_string(),
    )
}

/// Each of figment's errors as a problem, named by the variable or file that set its
/// key (`file`, or "configuration", for the defaults).
pub(super) fn from_figment(error: figment::Error, file: Option<&Path>) -> ConfigError {
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
