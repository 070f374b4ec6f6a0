//! A connector's `plugin_config` as its plugin describes it: the JSON Schema the SDK
//! derives from the connector's `Config` type, read into the fields a user sees
//! (reference docs, `GET /plugins`) and used to check a config without opening
//! anything (`validate`, `POST /plugins/{name}/validate`).
//!
//! The check walks the schema subset `schemars` produces (types, properties, required
//! fields, closed objects, arrays, `$ref`s to `$defs`, `oneOf`/`anyOf` of constants,
//! minimums and maximums), reporting every problem at once, then asks the plugin
//! itself (`Plugin::validate_config`: its own deserialisation and `check_config`).

use plugin_host::Plugin;
use serde_json::{Map, Value};

/// One key of a `plugin_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigField {
    /// Dot path from the top of `plugin_config` (`tls.ca_file`).
    pub key: String,
    /// Its type as a user reads it: `string`, `integer`, `boolean`, `[integer; 2]`,
    /// `"json" | "payload"`, `array of string`, ...
    pub kind: String,
    /// What an absent key means, when it may be absent.
    pub default: Option<Value>,
    /// Whether the key must be given.
    pub required: bool,
    /// Whether its value is a secret (marked `x-secret`, or named like one).
    pub secret: bool,
    /// The field's doc comment.
    pub doc: String,
}

/// A connector's `plugin_config` description, from its JSON Schema.
#[derive(Debug, Clone)]
pub struct ConfigDescription {
    schema: Value,
    fields: Vec<ConfigField>,
}

impl ConfigDescription {
    /// Reads a plugin's schema text ([`Plugin::config_schema`]).
    pub fn from_schema(text: &str) -> Result<ConfigDescription, String> {
        let schema: Value = serde_json::from_str(text)
            .map_err(|error| format!("the plugin's config schema is not JSON: {error}"))?;
        let mut fields = Vec::new();
        collect_fields(&schema, &schema, "", &mut fields, 0);
        Ok(ConfigDescription { schema, fields })
    }

    /// The description of `plugin`'s config.
    pub fn of(plugin: &Plugin) -> Result<ConfigDescription, String> {
        ConfigDescription::from_schema(plugin.config_schema())
    }

    /// Every key, nested ones under their dot path, in the order the config type
    /// declares them.
    pub fn fields(&self) -> &[ConfigField] {
        &self.fields
    }

    /// The fields as JSON (`key`, `type`, `default`, `required`, `secret`, `doc`), as
    /// the API shows them.
    pub fn fields_json(&self) -> Value {
        Value::Array(
            self.fields
                .iter()
                .map(|field| {
                    serde_json::json!({
                        "key": field.key,
                        "type": field.kind,
                        "default": field.default,
                        "required": field.required,
                        "secret": field.secret,
                        "doc": field.doc,
                    })
                })
                .collect(),
        )
    }

    /// `text` as the top-level field `entry` takes it, when its type is one a text
    /// spells (string, boolean, integer, number) and the text fits.
    fn type_text(&self, entry: &str, text: &str) -> Option<Value> {
        let property = self.schema.get("properties")?.get(entry)?;
        let property = resolve(&self.schema, property);
        let kinds: Vec<&str> = types(property)
            .into_iter()
            .filter(|kind| *kind != "null")
            .collect();
        match kinds.as_slice() {
            ["string"] => Some(Value::String(text.to_owned())),
            ["boolean"] => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            ["integer"] => {
                let text = text.trim();
                text.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| text.parse::<u64>().map(Value::from))
                    .ok()
            }
            ["number"] => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            _ => None,
        }
    }

    /// The JSON Schema itself.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The config type's own doc comment.
    pub fn doc(&self) -> &str {
        self.schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Every problem of `config` the schema shows (unknown keys with the nearest known
    /// one, wrong types, missing required keys), each naming its key as
    /// `plugin_config.<path>`.
    pub fn check(&self, config: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        check_value(&self.schema, &self.schema, config, "", &mut problems, 0);
        problems
    }

    /// The reference of the config as Markdown: a table of the keys.
    pub fn markdown(&self, name: &str, kind: &str) -> String {
        let mut out = format!("# `{name}` {kind}\n\n");
        if !self.doc().is_empty() {
            out.push_str(&format!("{}\n\n", self.doc()));
        }
        if self.fields.is_empty() {
            out.push_str("`plugin_config` takes no keys.\n");
            return out;
        }
        out.push_str("| key | type | default | secret | description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for field in &self.fields {
            let default = match (&field.default, field.required) {
                (_, true) => "required".to_owned(),
                (Some(Value::Null) | None, false) => "unset".to_owned(),
                (Some(value), false) => format!("`{value}`"),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                field.key,
                field.kind.replace('|', "\\|"),
                default,
                if field.secret { "yes" } else { "" },
                field.doc.replace('\n', " ").replace('|', "\\|"),
            ));
        }
        out
    }
}

/// `config`'s `plugin_config`, with each entry an environment variable set typed as
/// the plugin describes that entry: the variable's text as a string for a string field
/// (`..._PASSWORD=123456` stays `"123456"`), parsed for a boolean, integer or number
/// field. Text that does not parse as its field's type, and entries of any other type,
/// keep the provider's guess (the plugin's own check then names a misfit).
pub fn typed_plugin_config(plugin: &Plugin, config: &config_provider::ConnectorConfig) -> Value {
    let mut value = config.plugin_config();
    let texts = &config.common().plugin_config_env;
    if texts.is_empty() {
        return value;
    }
    let Ok(description) = ConfigDescription::of(plugin) else {
        return value;
    };
    let secrets = &config.common().secrets;
    if let Value::Object(fields) = &mut value {
        for (entry, text) in texts {
            // A variable holding `${env:...}` or `${file:...}` was resolved: type what
            // it resolved to, never the reference.
            let text = if secrets.contains(&format!("plugin_config.{entry}")) {
                match fields.get(entry).and_then(Value::as_str) {
                    Some(resolved) => resolved.to_owned(),
                    None => continue,
                }
            } else {
                text.clone()
            };
            if let Some(typed) = description.type_text(entry, &text) {
                fields.insert(entry.clone(), typed);
            }
        }
    }
    value
}

/// Every problem of `config` for `plugin`. The plugin's own check (its deserialisation
/// and `check_config`: what `open` would refuse before any I/O) decides whether there
/// are any, so a schema the walk reads too strictly never refuses a config the plugin
/// takes; when it refuses, the schema's findings say what is wrong, all at once and
/// with the nearest known key for a misspelt one, and the plugin's own words stand in
/// when the schema shows nothing.
pub fn check_plugin_config(plugin: &Plugin, config: &Value) -> Vec<String> {
    let Err(refused) = plugin.validate_config(&config.to_string()) else {
        return Vec::new();
    };
    let found = ConfigDescription::of(plugin)
        .map(|description| description.check(config))
        .unwrap_or_default();
    if found.is_empty() { refused } else { found }
}

/// How deep the walks follow a schema: a recursive config type (a list of itself)
/// would otherwise have them recurse for ever.
const MAX_DEPTH: usize = 32;

/// Follows a `$ref` to `#/$defs/<name>` (or `#/definitions/<name>`).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    // Bounded: a schema whose references loop is not followed forever.
    for _ in 0..32 {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return current;
        };
        let target = reference
            .strip_prefix("#/$defs/")
            .map(|name| root.get("$defs").and_then(|defs| defs.get(name)))
            .or_else(|| {
                reference
                    .strip_prefix("#/definitions/")
                    .map(|name| root.get("definitions").and_then(|defs| defs.get(name)))
            })
            .flatten();
        match target {
            Some(target) => current = target,
            None => return current,
        }
    }
    current
}

fn branches(schema: &Value) -> Option<&Vec<Value>> {
    schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
}

fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The type of `schema` as a user reads it.
fn describe(root: &Value, schema: &Value) -> String {
    describe_within(root, schema, 0)
}

fn describe_within(root: &Value, schema: &Value, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return "...".to_owned();
    }
    let describe = |root: &Value, schema: &Value| describe_within(root, schema, depth + 1);
    let schema = resolve(root, schema);
    if let Some(constant) = schema.get("const") {
        return constant.to_string();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(branches) = branches(schema) {
        let described: Vec<String> = branches
            .iter()
            .map(|branch| describe(root, branch))
            .filter(|text| text != "null")
            .collect();
        return described.join(" | ");
    }
    let kinds: Vec<&str> = types(schema)
        .into_iter()
        .filter(|kind| *kind != "null")
        .collect();
    match kinds.as_slice() {
        ["array"] => {
            let item = schema
                .get("items")
                .map_or_else(|| "any".to_owned(), |items| describe(root, items));
            match (
                schema.get("minItems").and_then(Value::as_u64),
                schema.get("maxItems").and_then(Value::as_u64),
            ) {
                (Some(min), Some(max)) if min == max => format!("[{item}; {min}]"),
                _ => format!("array of {item}"),
            }
        }
        ["object"]
            if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
        {
            let value = schema
                .get("additionalProperties")
                .map_or_else(|| "any".to_owned(), |value| describe(root, value));
            format!("table of {value}")
        }
        [] => "any".to_owned(),
        kinds => kinds.join(" | "),
    }
}

/// The one branch of an `anyOf`/`oneOf` that is not `null` (an `Option<T>`), else the
/// schema itself.
fn non_null<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let schema = resolve(root, schema);
    let Some(branches) = branches(schema) else {
        return schema;
    };
    let mut others = branches
        .iter()
        .filter(|branch| types(resolve(root, branch)) != ["null"]);
    match (others.next(), others.next()) {
        (Some(only), None) => resolve(root, only),
        _ => schema,
    }
}

fn collect_fields(
    root: &Value,
    schema: &Value,
    prefix: &str,
    fields: &mut Vec<ConfigField>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = resolve(root, schema);
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let target = non_null(root, property);
        let nested = target.get("properties").is_some_and(Value::is_object);
        let doc = property
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        fields.push(ConfigField {
            key: key.clone(),
            kind: if nested {
                "table".to_owned()
            } else {
                describe(root, property)
            },
            default: property.get("default").cloned(),
            required: required.contains(&name.as_str()),
            secret: property.get("x-secret").and_then(Value::as_bool) == Some(true)
                || config_provider::is_secret_field(name),
            doc,
        });
        if nested {
            collect_fields(root, target, &key, fields, depth + 1);
        }
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "plugin_config".to_owned()
    } else {
        format!("plugin_config.{path}")
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn check_value(
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let schema = resolve(root, schema);
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        problems.push(format!("{}: expected {constant}, got {value}", at(path)));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        problems.push(format!(
            "{}: expected {}, got {value}",
            at(path),
            describe(root, schema)
        ));
        return;
    }
    if let Some(branches) = branches(schema) {
        let fits = branches.iter().any(|branch| {
            let mut found = Vec::new();
            check_value(root, branch, value, path, &mut found, depth + 1);
            found.is_empty()
        });
        if !fits {
            problems.push(format!(
                "{}: expected {}, got {value}",
                at(path),
                describe(root, schema)
            ));
        }
        return;
    }
    let kinds = types(schema);
    if !kinds.is_empty() && !kinds.iter().any(|kind| type_matches(kind, value)) {
        problems.push(format!(
            "{}: expected {}, got {}",
            at(path),
            describe(root, schema),
            json_type(value)
        ));
        return;
    }
    match value {
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or_default();
            if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
                && number < minimum
            {
                problems.push(format!("{}: must be at least {minimum}", at(path)));
            }
            if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
                && number > maximum
            {
                problems.push(format!("{}: must be at most {maximum}", at(path)));
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && count < min
            {
                problems.push(format!(
                    "{}: expected at least {min} items, got {count}",
                    at(path)
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && count > max
            {
                problems.push(format!(
                    "{}: expected at most {max} items, got {count}",
                    at(path)
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check_value(
                        root,
                        item_schema,
                        item,
                        &format!("{path}[{index}]"),
                        problems,
                        depth + 1,
                    );
                }
            }
        }
        Value::Object(fields) => check_object(root, schema, fields, path, problems, depth),
        _ => {}
    }
}

fn check_object(
    root: &Value,
    schema: &Value,
    fields: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
    depth: usize,
) {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(name) {
            problems.push(format!("{}: required, and missing", at(&join(name))));
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in fields {
        match properties.get(name) {
            Some(property) => {
                check_value(root, property, value, &join(name), problems, depth + 1);
            }
            None if closed => {
                let known = properties.keys().map(String::as_str);
                let hint = match config_provider::nearest(name, known) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None if properties.is_empty() => "; this connector takes no keys".to_owned(),
                    None => format!(
                        "; known keys: {}",
                        properties.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                };
                problems.push(format!("{}: unknown key{hint}", at(&join(name))));
            }
            None => {
                if let Some(values) = schema.get("additionalProperties")
                    && values.is_object()
                {
                    check_value(root, values, value, &join(name), problems, depth + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn description() -> ConfigDescription {
        let schema = json!({
            "description": "A test config.",
            "type": "object",
            "properties": {
                "path": { "description": "Where to write.", "type": "string" },
                "format": { "$ref": "#/$defs/Format", "default": "json" },
                "range": {
                    "type": "array", "items": { "type": "integer", "minimum": 0 },
                    "minItems": 2, "maxItems": 2, "default": [1, 10]
                },
                "limit": { "type": ["integer", "null"], "minimum": 0, "default": null },
                "password": { "type": "string", "default": "" },
                "tls": {
                    "type": "object",
                    "properties": { "ca_file": { "type": "string", "x-secret": true } },
                    "additionalProperties": false,
                    "default": {}
                }
            },
            "required": ["path"],
            "additionalProperties": false,
            "$defs": {
                "Format": { "oneOf": [
                    { "description": "JSON lines", "type": "string", "const": "json" },
                    { "type": "string", "const": "payload" }
                ]}
            }
        });
        ConfigDescription::from_schema(&schema.to_string()).unwrap()
    }

    #[test]
    fn fields_read_as_a_user_reads_them() {
        let description = description();
        let fields: Vec<(&str, &str, bool, bool)> = description
            .fields()
            .iter()
            .map(|field| {
                (
                    field.key.as_str(),
                    field.kind.as_str(),
                    field.required,
                    field.secret,
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("path", "string", true, false),
                ("format", "\"json\" | \"payload\"", false, false),
                ("range", "[integer; 2]", false, false),
                ("limit", "integer", false, false),
                ("password", "string", false, true),
                ("tls", "table", false, false),
                ("tls.ca_file", "string", false, true),
            ]
        );
        assert_eq!(description.fields()[0].doc, "Where to write.");
        assert_eq!(description.fields()[2].default, Some(json!([1, 10])));
        let markdown = description.markdown("test", "sink");
        assert!(
            markdown.contains("| `path` | string | required |  | Where to write. |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(r#"| `format` | "json" \| "payload" | `"json"` |"#),
            "{markdown}"
        );
    }

    #[test]
    fn a_recursive_config_type_is_walked_to_a_depth_not_for_ever() {
        let schema = json!({
            "type": "object",
            "properties": { "tree": { "$ref": "#/$defs/Tree" } },
            "$defs": { "Tree": { "anyOf": [
                { "type": "array", "items": { "$ref": "#/$defs/Tree" } },
                { "type": "string" }
            ]}}
        });
        let description = ConfigDescription::from_schema(&schema.to_string()).unwrap();
        assert!(
            description.fields()[0].kind.contains("..."),
            "{:?}",
            description.fields()
        );
        let mut deep = json!("leaf");
        for _ in 0..200 {
            deep = json!([deep]);
        }
        // Deeper than the walk goes: no stack overflow, and no verdict past the depth.
        let _ = description.check(&json!({ "tree": deep }));
        assert!(!description.check(&json!({ "tree": 5 })).is_empty());
    }

    #[test]
    fn an_optional_table_is_described_field_by_field() {
        let schema = json!({
            "type": "object",
            "properties": { "tls": { "anyOf": [{ "$ref": "#/$defs/Tls" }, { "type": "null" }] } },
            "$defs": { "Tls": { "type": "object", "properties": {
                "ca_file": { "type": "string", "description": "The CA." }
            }}}
        });
        let description = ConfigDescription::from_schema(&schema.to_string()).unwrap();
        let keys: Vec<&str> = description
            .fields()
            .iter()
            .map(|field| field.key.as_str())
            .collect();
        assert_eq!(keys, ["tls", "tls.ca_file"]);
    }

    #[test]
    fn a_variables_text_takes_its_fields_type() {
        let description = description();
        assert_eq!(
            description.type_text("password", "123456"),
            Some(json!("123456"))
        );
        assert_eq!(description.type_text("limit", " 12 "), Some(json!(12)));
        assert_eq!(description.type_text("limit", "twelve"), None);
        assert_eq!(description.type_text("path", "0777"), Some(json!("0777")));
        // Not a type a text spells: the provider's guess stands.
        assert_eq!(description.type_text("range", "[1, 2]"), None);
        assert_eq!(description.type_text("nope", "1"), None);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let problems = description().check(&json!({
            "pth": "x",
            "format": "yaml",
            "range": [1, "b", 3],
            "limit": -1,
            "tls": { "ca": "x" }
        }));
        let expected = [
            "plugin_config.path: required, and missing",
            "plugin_config.pth: unknown key; did you mean `path`?",
            "plugin_config.format: expected \"json\" | \"payload\", got \"yaml\"",
            "plugin_config.range: expected at most 2 items, got 3",
            "plugin_config.range[1]: expected integer, got a string",
            "plugin_config.limit: must be at least 0",
            "plugin_config.tls.ca: unknown key; known keys: ca_file",
        ];
        for problem in expected {
            assert!(
                problems.iter().any(|found| found == problem),
                "{problem} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        assert!(
            description()
                .check(&json!({ "path": "x", "limit": null }))
                .is_empty()
        );
        assert_eq!(
            description().check(&json!([1])),
            ["plugin_config: expected object, got an array"]
        );
    }
}
