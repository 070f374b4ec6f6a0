//! The environment layer: the `IGGY_CONNECTORS_*` variables, each matched to its key
//! by the name the schema derives (an unknown one named with the nearest), its value
//! parsed by the kind of that key (booleans, integers, durations, lists, tables; a
//! string stays a string) and its secrets resolved, as a figment dictionary that
//! remembers which variable set each key.

use std::collections::BTreeMap;

use figment::value::{Dict, Tag, Value};

use connector_sdk::duration::parse_duration;

use super::file::toml_to_figment;
use super::report::{ConfigError, Problem};
use super::schema::{Node, env_names};
use super::{CONFIG_PATH_ENV, ENV_PREFIX};
use crate::overrides::is_connector_override;
use crate::secrets::Resolver;

/// The environment as a layer: the values set, by key path, and who set them.
#[derive(Default)]
pub(super) struct EnvLayer {
    /// The values, nested by key path.
    pub(super) dict: Dict,
    /// Key path -> the variable that set it.
    pub(super) names: BTreeMap<String, String>,
}

/// Variables under the prefix that belong to others: the config path and connector
/// overrides (`IGGY_CONNECTORS_SINK_*`, `IGGY_CONNECTORS_SOURCE_*`).
fn is_foreign(name: &str) -> bool {
    name == CONFIG_PATH_ENV || is_connector_override(name)
}

/// The layer of the variables in `env` under [`ENV_PREFIX`] (the config path and
/// connector overrides aside), checked against `schema`, secrets resolved by
/// `resolver`; every problem at once.
pub(super) fn env_dict(
    env: impl IntoIterator<Item = (String, String)>,
    schema: &Node,
    resolver: &mut Resolver,
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
        resolver.resolve(&mut value, path, &name, &mut problems);
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

/// A boolean from the environment: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub(super) fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected a boolean (true or false), got {raw:?}")),
    }
}

/// Parses an environment value by the type of its key.
fn parse_env_value(raw: &str, node: &Node) -> Result<Value, String> {
    let trimmed = raw.trim();
    match node {
        Node::Bool => parse_bool(raw).map(Value::from),
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
}
