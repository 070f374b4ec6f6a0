//! Secrets: values written as `${env:NAME}` or `${file:/path}` are resolved at load
//! and remembered, so that logs and API output can redact them.

use std::collections::BTreeSet;

use figment::value::Value;

use crate::load::Problem;

/// Key paths whose values are secrets.
pub type SecretPaths = BTreeSet<String>;

/// Keys that are secrets whatever their value came from (a `*` matches any map key).
pub(crate) const ALWAYS_SECRET: &[&str] = &[
    "iggy.password",
    "iggy.token",
    "http.api_key",
    "connectors.request_headers.*",
];

/// What redacted values read as.
pub const REDACTED: &str = "******";

/// Resolves a `${env:NAME}` or `${file:/path}` reference; `None` for a plain value.
pub(crate) fn resolve_reference(text: &str) -> Option<Result<String, String>> {
    let inner = text.trim().strip_prefix("${")?.strip_suffix('}')?;
    if let Some(name) = inner.strip_prefix("env:") {
        return Some(
            std::env::var(name)
                .map_err(|_| format!("environment variable {name} (from {text}) is not set")),
        );
    }
    if let Some(path) = inner.strip_prefix("file:") {
        return Some(
            std::fs::read_to_string(path)
                .map(|content| content.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|error| format!("cannot read secret file {path}: {error}")),
        );
    }
    None
}

/// Resolves every reference inside `value` (at `path`), recording secret paths.
pub(crate) fn resolve(
    value: &mut Value,
    path: &str,
    source: &str,
    secrets: &mut SecretPaths,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(_, text) => match resolve_reference(text) {
            Some(Ok(resolved)) => {
                *text = resolved;
                secrets.insert(path.to_owned());
            }
            Some(Err(message)) => problems.push(Problem {
                source: source.to_owned(),
                key: Some(path.to_owned()),
                message,
            }),
            None => {}
        },
        Value::Array(_, items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve(item, &format!("{path}[{index}]"), source, secrets, problems);
            }
        }
        Value::Dict(_, dict) => {
            for (key, item) in dict.iter_mut() {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                resolve(item, &inner, source, secrets, problems);
            }
        }
        _ => {}
    }
}

/// Resolves every reference inside a TOML value (connector files), recording secret
/// paths; returns the first problem.
pub(crate) fn resolve_toml(
    value: &mut toml::Value,
    path: &str,
    secrets: &mut SecretPaths,
) -> Result<(), String> {
    match value {
        toml::Value::String(text) => match resolve_reference(text) {
            Some(Ok(resolved)) => {
                *text = resolved;
                secrets.insert(path.to_owned());
                Ok(())
            }
            Some(Err(message)) => Err(format!("`{path}`: {message}")),
            None => Ok(()),
        },
        toml::Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(index, item)| resolve_toml(item, &format!("{path}[{index}]"), secrets)),
        toml::Value::Table(table) => table.iter_mut().try_for_each(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            resolve_toml(item, &inner, secrets)
        }),
        _ => Ok(()),
    }
}

/// Replaces the value at `path` (dot path, `*` for every key, `[i]` ignored) with
/// [`REDACTED`], if it is there and not empty.
pub(crate) fn redact_path(value: &mut serde_json::Value, path: &str) {
    let path = path.split('[').next().unwrap_or(path);
    let mut parts = path.splitn(2, '.');
    let Some(head) = parts.next() else {
        return;
    };
    let rest = parts.next();
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let keys: Vec<String> = if head == "*" {
        object.keys().cloned().collect()
    } else {
        vec![head.to_owned()]
    };
    for key in keys {
        let Some(child) = object.get_mut(&key) else {
            continue;
        };
        match rest {
            Some(rest) => redact_path(child, rest),
            None => {
                let empty = child.as_str().is_some_and(str::is_empty);
                if !empty && !child.is_null() {
                    *child = serde_json::Value::String(REDACTED.to_owned());
                }
            }
        }
    }
}

/// Whether a plugin config field holds a secret, by its name: it contains `password`,
/// `passwd`, `secret`, `token`, `api_key`, `apikey`, `private_key`, `credential` or
/// `authorization` (case-insensitive, `-` read as `_`). Connector authors name fields so.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "authorization",
    ]
    .iter()
    .any(|marker| name.contains(marker))
}

/// Replaces the values of secret-named fields ([`is_secret_field`]) inside `value`, at
/// any depth; empty values stay empty, so that "not set" still shows.
pub(crate) fn redact_secret_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_field(name) && !field.is_object() && !field.is_array() {
                    if !field.is_null() && field.as_str() != Some("") {
                        *field = serde_json::Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact_secret_fields(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secret_fields),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_nested_and_wildcard_paths() {
        let mut value = serde_json::json!({
            "iggy": { "password": "p", "token": "" },
            "connectors": { "request_headers": { "api-key": "k", "x": "y" } }
        });
        for path in ALWAYS_SECRET {
            redact_path(&mut value, path);
        }
        assert_eq!(value["iggy"]["password"], REDACTED);
        assert_eq!(value["iggy"]["token"], "", "empty values stay empty");
        assert_eq!(value["connectors"]["request_headers"]["api-key"], REDACTED);
        assert_eq!(value["connectors"]["request_headers"]["x"], REDACTED);
    }

    #[test]
    fn references_resolve_from_files_and_complain_when_missing() {
        let dir = std::env::temp_dir().join(format!("secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let reference = format!("${{file:{}}}", file.display());
        assert_eq!(resolve_reference(&reference), Some(Ok("s3cret".to_owned())));
        assert_eq!(resolve_reference("plain"), None);
        let missing = resolve_reference("${env:SURELY_NOT_SET_ANYWHERE_42}").unwrap();
        assert!(missing.unwrap_err().contains("SURELY_NOT_SET_ANYWHERE_42"));
    }
}
