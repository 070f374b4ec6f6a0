//! The file layer: the TOML config file, checked against the schema before anything
//! is deserialised (every unknown key with the nearest valid one, types, durations),
//! its secrets resolved, as a figment dictionary. It is read ([`read_table`]) before
//! it is checked and resolved ([`check_file`]), so that `secrets.require_private_files`
//! is known before any secret file is opened.

use std::path::Path;

use figment::value::{Dict, Tag, Value};

use connector_sdk::duration::parse_duration;

use super::report::{ConfigError, Problem};
use super::schema::{Node, join};
use crate::secrets::Resolver;

/// Reads the config file at `path` as a TOML table, nothing checked yet.
pub(super) fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::one(
            &source,
            None,
            format!("cannot read the config file: {error}"),
        )
    })?;
    toml::from_str(&text)
        .map_err(|error| ConfigError::one(&source, None, format!("not valid TOML: {error}")))
}

/// The file layer: the table [`read_table`] read from `path`, checked against `schema`,
/// its secrets resolved by `resolver`; every problem at once.
pub(super) fn check_file(
    path: &Path,
    table: toml::Table,
    schema: &Node,
    resolver: &mut Resolver,
) -> Result<Dict, ConfigError> {
    let source = path.display().to_string();
    let mut problems = Vec::new();
    check_keys(&table, schema, "", &source, &mut problems);
    let mut value = toml_to_figment(toml::Value::Table(table));
    resolver.resolve(&mut value, "", &source, &mut problems);
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

/// A TOML value as figment's (a date becomes its string).
pub(super) fn toml_to_figment(value: toml::Value) -> Value {
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
