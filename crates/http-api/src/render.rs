//! Renders a plugin config as JSON, YAML, TOML or plain text.

use std::fmt::Write as _;

use serde_json::Value;

/// A rendering of a plugin config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Yaml,
    Toml,
    Text,
}

impl Format {
    pub(crate) fn parse(text: &str) -> Option<Format> {
        Some(match text.to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "yaml" | "yml" => Format::Yaml,
            "toml" => Format::Toml,
            "text" | "txt" => Format::Text,
            _ => return None,
        })
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::Toml => "application/toml",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// Renders `value`. TOML has no null: null fields are left out, as TOML readers
    /// would read a missing field. The error says why the format cannot hold the
    /// value: a TOML document is a table, and its integers are signed 64-bit, while
    /// the API takes any JSON as a plugin config.
    pub(crate) fn render(self, value: &Value) -> Result<String, String> {
        match self {
            Format::Json => serde_json::to_string_pretty(value).map_err(|e| e.to_string()),
            Format::Yaml => {
                let mut out = String::new();
                yaml(value, 0, &mut out);
                Ok(out)
            }
            Format::Toml => {
                let cannot = |why: &str| {
                    format!("TOML cannot hold this plugin config: {why}; ask for format=json")
                };
                if !value.is_object() {
                    return Err(cannot(
                        "a TOML document is a table, and it is not a JSON object",
                    ));
                }
                let table: toml::Value = serde_json::from_value(without_nulls(value.clone()))
                    .map_err(|error| cannot(&error.to_string()))?;
                toml::to_string(&table).map_err(|error| cannot(&error.to_string()))
            }
            Format::Text => {
                let mut out = String::new();
                text(value, "", &mut out);
                Ok(out)
            }
        }
    }
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, field)| !field.is_null())
                .map(|(name, field)| (name, without_nulls(field)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|item| !item.is_null())
                .map(without_nulls)
                .collect(),
        ),
        other => other,
    }
}

/// A scalar as YAML: strings are always double-quoted (JSON string syntax is valid
/// YAML), so no value is misread as a number, boolean or null.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(text) => Value::String(text.clone()).to_string(),
        Value::Object(fields) if fields.is_empty() => "{}".to_owned(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        other => other.to_string(),
    }
}

fn is_nested(value: &Value) -> bool {
    match value {
        Value::Object(fields) => !fields.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

fn yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (name, field) in fields {
                let key = Value::String(name.clone());
                if is_nested(field) {
                    let _ = writeln!(out, "{pad}{key}:");
                    yaml(field, indent + 2, out);
                } else {
                    let _ = writeln!(out, "{pad}{key}: {}", yaml_scalar(field));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_nested(item) {
                    let _ = writeln!(out, "{pad}-");
                    yaml(item, indent + 2, out);
                } else {
                    let _ = writeln!(out, "{pad}- {}", yaml_scalar(item));
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
        }
    }
}

/// One `path = value` line per leaf, paths dotted (`a.b`) and indexed (`a[0]`).
fn text(value: &Value, path: &str, out: &mut String) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (name, field) in fields {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                text(field, &child, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                text(item, &format!("{path}[{index}]"), out);
            }
        }
        leaf => {
            let shown = match leaf {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(out, "{path} = {shown}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "path": "out.jsonl",
            "count": 3,
            "flags": [true, false],
            "nested": { "a": "yes", "b": null, "list": [{ "x": 1 }] },
            "empty": {}
        })
    }

    #[test]
    fn every_format_renders_every_field() {
        let value = sample();
        let json: Value = serde_json::from_str(&Format::Json.render(&value).unwrap()).unwrap();
        assert_eq!(json, value);
        let toml: toml::Value = toml::from_str(&Format::Toml.render(&value).unwrap()).unwrap();
        assert_eq!(toml["nested"]["list"][0]["x"].as_integer(), Some(1));
        assert!(toml["nested"].get("b").is_none(), "TOML has no null");
        let yaml = Format::Yaml.render(&value).unwrap();
        assert!(yaml.contains("\"path\": \"out.jsonl\"\n"), "{yaml}");
        assert!(
            yaml.contains("\"nested\":\n  \"a\": \"yes\"\n  \"b\": null\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("  \"list\":\n    -\n      \"x\": 1\n"),
            "{yaml}"
        );
        assert!(yaml.contains("\"flags\":\n  - true\n  - false\n"), "{yaml}");
        assert!(yaml.contains("\"empty\": {}\n"), "{yaml}");
        let text = Format::Text.render(&value).unwrap();
        assert!(text.contains("nested.list[0].x = 1\n"), "{text}");
        assert!(text.contains("path = out.jsonl\n"), "{text}");
    }

    #[test]
    fn what_toml_cannot_hold_is_an_error_that_says_so() {
        for value in [
            serde_json::json!([1]),
            serde_json::json!(5),
            serde_json::json!("text"),
            serde_json::json!({ "big": u64::MAX }),
        ] {
            let error = Format::Toml.render(&value).unwrap_err();
            assert!(error.starts_with("TOML cannot hold"), "{value}: {error}");
        }
    }

    #[test]
    fn formats_parse_case_insensitively() {
        assert_eq!(Format::parse("YAML"), Some(Format::Yaml));
        assert_eq!(Format::parse("xml"), None);
    }
}
