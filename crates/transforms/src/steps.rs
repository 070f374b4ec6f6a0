//! The transforms themselves, each a [`Step`] built from its `[transforms.<name>]`
//! table: field transforms (add, delete, update, filter fields), `unwrap_envelope`,
//! `filter` and `route`; the convert transforms are in `convert.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

use connector_sdk::ConnectorKind;
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::chain::{Message, Step, TRANSFORMS, Verdict};
use crate::convert::Convert;
use crate::payload::{JsonObject, Payload};

/// The transform `name` of a `kind` connector from its table (`enabled` already
/// checked): its name as the counters show it, and the step. Every problem names the
/// transform and key.
pub(crate) fn build(
    kind: ConnectorKind,
    name: &str,
    config: &Value,
) -> Result<(&'static str, Box<dyn Step>), String> {
    let built: (&'static str, Box<dyn Step>) = match name {
        "add_fields" => (
            "add_fields",
            Box::new(AddFields::new(settings(name, config)?)?),
        ),
        "delete_fields" => (
            "delete_fields",
            Box::new(settings::<DeleteFields>(name, config)?),
        ),
        "update_fields" => (
            "update_fields",
            Box::new(UpdateFields::new(settings(name, config)?)?),
        ),
        "filter_fields" => (
            "filter_fields",
            Box::new(FilterFields::new(settings(name, config)?)?),
        ),
        "unwrap_envelope" => {
            let unwrap: UnwrapEnvelope = settings(name, config)?;
            if unwrap.field.is_empty() {
                return Err("transforms.unwrap_envelope.field: must not be empty".to_owned());
            }
            ("unwrap_envelope", Box::new(unwrap))
        }
        "filter" => ("filter", Box::new(Filter::new(settings(name, config)?)?)),
        "route" => {
            if kind == ConnectorKind::Sink {
                return Err("transforms.route: only sources can route (a sink's topics are what it consumes)".to_owned());
            }
            ("route", Box::new(settings::<Route>(name, config)?))
        }
        "proto_convert" => (
            "proto_convert",
            Box::new(Convert::proto(settings(name, config)?)?),
        ),
        "avro_convert" => (
            "avro_convert",
            Box::new(Convert::avro(settings(name, config)?)?),
        ),
        "flat_buffer_convert" => (
            "flat_buffer_convert",
            Box::new(Convert::flat_buffer(settings(name, config)?)?),
        ),
        other => {
            return Err(format!(
                "transforms.{other}: unknown transform; known: {}",
                TRANSFORMS.join(", ")
            ));
        }
    };
    Ok(built)
}

/// A transform's table as `T`, without its `enabled` key.
fn settings<T: DeserializeOwned>(name: &str, config: &Value) -> Result<T, String> {
    let mut config = config.clone();
    if let Some(fields) = config.as_object_mut() {
        fields.remove("enabled");
    }
    serde_path_to_error::deserialize(config).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            format!("transforms.{name}: {}", error.inner())
        } else {
            format!("transforms.{name}.{path}: {}", error.inner())
        }
    })
}

/// The object a field transform works on; other payloads pass through unchanged.
fn object(message: &mut Message) -> Option<&mut JsonObject> {
    match &mut message.payload {
        Payload::Object(object) => Some(object),
        _ => None,
    }
}

// ---- values: static or computed -------------------------------------------------

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Computed {
    DateTime,
    TimestampNanos,
    TimestampMicros,
    TimestampMillis,
    TimestampSeconds,
    UuidV4,
    UuidV7,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum FieldValue {
    Static(Value),
    Computed(Computed),
}

impl FieldValue {
    fn produce(&self) -> Value {
        match self {
            FieldValue::Static(value) => value.clone(),
            FieldValue::Computed(kind) => computed(*kind),
        }
    }
}

fn computed(kind: Computed) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match kind {
        Computed::DateTime => Value::String(rfc3339(now)),
        Computed::TimestampNanos => Value::from(now.as_nanos() as u64),
        Computed::TimestampMicros => Value::from(now.as_micros() as u64),
        Computed::TimestampMillis => Value::from(now.as_millis() as u64),
        Computed::TimestampSeconds => Value::from(now.as_secs()),
        Computed::UuidV4 => Value::String(uuid::Uuid::new_v4().to_string()),
        Computed::UuidV7 => Value::String(uuid::Uuid::now_v7().to_string()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), from days since the epoch by the civil
/// calendar algorithm.
fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_micros()
    )
}

// ---- add_fields, delete_fields, update_fields ------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddFieldsConfig {
    fields: Vec<AddField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddField {
    key: String,
    value: FieldValue,
}

struct AddFields(Vec<AddField>);

impl AddFields {
    fn new(config: AddFieldsConfig) -> Result<Self, String> {
        if let Some(index) = config.fields.iter().position(|field| field.key.is_empty()) {
            return Err(format!(
                "transforms.add_fields.fields[{index}].key: must not be empty"
            ));
        }
        Ok(AddFields(config.fields))
    }
}

impl Step for AddFields {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        if let Some(object) = object(message) {
            for field in &self.0 {
                object.set(&field.key, field.value.produce());
            }
        }
        Ok(Verdict::Keep)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteFields {
    fields: Vec<String>,
}

impl Step for DeleteFields {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        if let Some(object) = object(message) {
            for key in &self.fields {
                object.remove(key);
            }
        }
        Ok(Verdict::Keep)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Condition {
    #[default]
    Always,
    KeyExists,
    KeyNotExists,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateFieldsConfig {
    fields: Vec<UpdateField>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateField {
    key: String,
    /// `{ static = ... }`, `{ computed = ... }`, or a plain value.
    value: Value,
    #[serde(default)]
    condition: Condition,
}

struct UpdateFields(Vec<(String, FieldValue, Condition)>);

impl UpdateFields {
    fn new(config: UpdateFieldsConfig) -> Result<Self, String> {
        let mut fields = Vec::new();
        for (index, field) in config.fields.into_iter().enumerate() {
            let tagged = field.value.as_object().is_some_and(|object| {
                object.len() == 1
                    && (object.contains_key("static") || object.contains_key("computed"))
            });
            let value = if tagged {
                serde_json::from_value(field.value).map_err(|error| {
                    format!("transforms.update_fields.fields[{index}].value: {error}")
                })?
            } else {
                FieldValue::Static(field.value)
            };
            fields.push((field.key, value, field.condition));
        }
        Ok(UpdateFields(fields))
    }
}

impl Step for UpdateFields {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        if let Some(object) = object(message) {
            for (key, value, condition) in &self.0 {
                let exists = object.contains(key);
                let applies = match condition {
                    Condition::Always => true,
                    Condition::KeyExists => exists,
                    Condition::KeyNotExists => !exists,
                };
                if applies {
                    object.set(key, value.produce());
                }
            }
        }
        Ok(Verdict::Keep)
    }
}

// ---- patterns (filter_fields, filter) ---------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum KeyPatternConfig {
    Exact(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    Regex(String),
}

enum KeyPattern {
    Exact(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    Regex(Regex),
}

impl KeyPattern {
    fn new(config: KeyPatternConfig, at: &str) -> Result<Self, String> {
        Ok(match config {
            KeyPatternConfig::Exact(text) => KeyPattern::Exact(text),
            KeyPatternConfig::StartsWith(text) => KeyPattern::StartsWith(text),
            KeyPatternConfig::EndsWith(text) => KeyPattern::EndsWith(text),
            KeyPatternConfig::Contains(text) => KeyPattern::Contains(text),
            KeyPatternConfig::Regex(text) => KeyPattern::Regex(
                Regex::new(&text).map_err(|error| format!("{at}.regex: {error}"))?,
            ),
        })
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            KeyPattern::Exact(text) => key == text,
            KeyPattern::StartsWith(text) => key.starts_with(text.as_str()),
            KeyPattern::EndsWith(text) => key.ends_with(text.as_str()),
            KeyPattern::Contains(text) => key.contains(text.as_str()),
            KeyPattern::Regex(regex) => regex.is_match(key),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ValuePatternConfig {
    Equals(Value),
    Contains(String),
    Regex(String),
    GreaterThan(f64),
    LessThan(f64),
    Between([f64; 2]),
    IsNull,
    IsNotNull,
    IsString,
    IsNumber,
    IsBoolean,
    IsObject,
    IsArray,
}

enum ValuePattern {
    Equals(Value),
    Contains(String),
    Regex(Regex),
    GreaterThan(f64),
    LessThan(f64),
    Between(f64, f64),
    Is(fn(&Value) -> bool),
}

impl ValuePattern {
    fn new(config: ValuePatternConfig, at: &str) -> Result<Self, String> {
        Ok(match config {
            ValuePatternConfig::Equals(value) => ValuePattern::Equals(value),
            ValuePatternConfig::Contains(text) => ValuePattern::Contains(text),
            ValuePatternConfig::Regex(text) => ValuePattern::Regex(
                Regex::new(&text).map_err(|error| format!("{at}.regex: {error}"))?,
            ),
            ValuePatternConfig::GreaterThan(bound) => ValuePattern::GreaterThan(bound),
            ValuePatternConfig::LessThan(bound) => ValuePattern::LessThan(bound),
            ValuePatternConfig::Between([low, high]) => {
                if low > high {
                    return Err(format!("{at}.between: [{low}, {high}] is empty"));
                }
                ValuePattern::Between(low, high)
            }
            ValuePatternConfig::IsNull => ValuePattern::Is(Value::is_null),
            ValuePatternConfig::IsNotNull => ValuePattern::Is(|value| !value.is_null()),
            ValuePatternConfig::IsString => ValuePattern::Is(Value::is_string),
            ValuePatternConfig::IsNumber => ValuePattern::Is(Value::is_number),
            ValuePatternConfig::IsBoolean => ValuePattern::Is(Value::is_boolean),
            ValuePatternConfig::IsObject => ValuePattern::Is(Value::is_object),
            ValuePatternConfig::IsArray => ValuePattern::Is(Value::is_array),
        })
    }

    fn matches(&self, value: &Value) -> bool {
        match self {
            ValuePattern::Equals(expected) => value == expected,
            ValuePattern::Contains(text) => {
                value.as_str().is_some_and(|s| s.contains(text.as_str()))
            }
            ValuePattern::Regex(regex) => value.as_str().is_some_and(|s| regex.is_match(s)),
            ValuePattern::GreaterThan(bound) => value.as_f64().is_some_and(|n| n > *bound),
            ValuePattern::LessThan(bound) => value.as_f64().is_some_and(|n| n < *bound),
            ValuePattern::Between(low, high) => {
                value.as_f64().is_some_and(|n| n >= *low && n <= *high)
            }
            ValuePattern::Is(test) => test(value),
        }
    }
}

// ---- filter_fields ----------------------------------------------------------------

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterFieldsConfig {
    #[serde(default)]
    keep_fields: Vec<String>,
    #[serde(default)]
    patterns: Vec<PatternConfig>,
    #[serde(default = "yes")]
    include_matching: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternConfig {
    key_pattern: Option<KeyPatternConfig>,
    value_pattern: Option<ValuePatternConfig>,
}

struct FieldPattern {
    key: Option<KeyPattern>,
    value: Option<ValuePattern>,
}

struct FilterFields {
    keep: Vec<String>,
    patterns: Vec<FieldPattern>,
    include_matching: bool,
}

impl FilterFields {
    fn new(config: FilterFieldsConfig) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for (index, pattern) in config.patterns.into_iter().enumerate() {
            let at = format!("transforms.filter_fields.patterns[{index}]");
            patterns.push(FieldPattern {
                key: pattern
                    .key_pattern
                    .map(|key| KeyPattern::new(key, &format!("{at}.key_pattern")))
                    .transpose()?,
                value: pattern
                    .value_pattern
                    .map(|value| ValuePattern::new(value, &format!("{at}.value_pattern")))
                    .transpose()?,
            });
        }
        Ok(FilterFields {
            keep: config.keep_fields,
            patterns,
            include_matching: config.include_matching,
        })
    }
}

impl Step for FilterFields {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        let Some(object) = object(message) else {
            return Ok(Verdict::Keep);
        };
        object.retain(|key, value| {
            if self.keep.iter().any(|kept| kept == key) {
                return Ok(true);
            }
            let mut matches = false;
            for pattern in &self.patterns {
                let key_matches = pattern.key.as_ref().is_none_or(|p| p.matches(key));
                let value_matches = match &pattern.value {
                    None => true,
                    Some(value_pattern) if key_matches => value_pattern.matches(&value()?),
                    Some(_) => false,
                };
                if key_matches && value_matches {
                    matches = true;
                    break;
                }
            }
            Ok(matches == self.include_matching)
        })?;
        Ok(Verdict::Keep)
    }
}

// ---- unwrap_envelope --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnwrapEnvelope {
    field: String,
}

impl Step for UnwrapEnvelope {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        let Some(object) = object(message) else {
            return Ok(Verdict::Keep);
        };
        let Some(inner) = object.get(&self.field) else {
            return Ok(Verdict::Keep);
        };
        message.payload = match inner? {
            Value::Object(map) => Payload::Object(JsonObject::from_map(map)),
            other => Payload::Json(other),
        };
        Ok(Verdict::Keep)
    }
}

// ---- filter (drop messages) ---------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    /// A dotted path into the payload.
    field: String,
    /// The condition on the field's value (a missing field is null).
    matches: ValuePatternConfig,
    /// Keep the matching messages and drop the others (default: drop the matching).
    #[serde(default)]
    keep_matching: bool,
}

struct Filter {
    field: String,
    pattern: ValuePattern,
    keep_matching: bool,
}

impl Filter {
    fn new(config: FilterConfig) -> Result<Self, String> {
        if config.field.is_empty() {
            return Err("transforms.filter.field: must not be empty".to_owned());
        }
        Ok(Filter {
            pattern: ValuePattern::new(config.matches, "transforms.filter.matches")?,
            field: config.field,
            keep_matching: config.keep_matching,
        })
    }
}

impl Step for Filter {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        let value = match &message.payload {
            Payload::Object(object) => object.lookup(&self.field).unwrap_or(Value::Null),
            // Only JSON objects have fields; other payloads are left alone.
            _ => return Ok(Verdict::Keep),
        };
        let matches = self.pattern.matches(&value);
        Ok(if matches == self.keep_matching {
            Verdict::Keep
        } else {
            Verdict::Drop
        })
    }
}

// ---- route (sources) ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    /// A dotted path into the payload; its value (a string, number or boolean) picks
    /// the topic.
    field: String,
    /// Value -> topic.
    topics: std::collections::BTreeMap<String, String>,
    /// The topic for values not in `topics`; without it they keep the stream's topic.
    #[serde(default)]
    default_topic: Option<String>,
}

impl Step for Route {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String> {
        let value = match &message.payload {
            Payload::Object(object) => object.lookup(&self.field),
            _ => None,
        };
        let key = match value {
            Some(Value::String(text)) => Some(text),
            Some(value @ (Value::Number(_) | Value::Bool(_))) => Some(value.to_string()),
            _ => None,
        };
        let topic = key
            .and_then(|key| self.topics.get(&key))
            .or(self.default_topic.as_ref());
        if let Some(topic) = topic {
            message.topic = Some(topic.clone());
        }
        Ok(Verdict::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_micros(951_782_400_000_001)),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(1_795_837_697)),
            "2026-11-28T03:48:17.000000Z"
        );
    }
}
