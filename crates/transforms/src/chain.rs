//! The transforms and the chain that runs them in config order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use connector_sdk::ConnectorKind;
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::payload::{JsonObject, Payload};

/// A message as transforms see it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The decoded payload.
    pub payload: Payload,
    /// Where a `route` transform sent it (sources only); `None`: the stream's topic.
    pub topic: Option<String>,
}

/// What a transform decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the message on.
    Keep,
    /// Filter it out (counted, not an error).
    Drop,
}

/// A transform failed on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError {
    /// The transform's name.
    pub transform: &'static str,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transform {} failed: {}", self.transform, self.message)
    }
}

impl std::error::Error for TransformError {}

/// One transform's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransformCounts {
    /// The transform's name.
    pub name: String,
    /// Messages it was given.
    pub messages_in: u64,
    /// Messages it passed on.
    pub messages_out: u64,
    /// Messages it filtered out.
    pub dropped: u64,
    /// Messages it failed on.
    pub failed: u64,
}

trait Step: Send + Sync {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String>;
}

struct Counted {
    name: &'static str,
    step: Box<dyn Step>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// A connector's transforms, in config order. Cheap to clone: clones share counters.
#[derive(Clone, Default)]
pub struct TransformChain {
    steps: Arc<Vec<Counted>>,
}

impl std::fmt::Debug for TransformChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|step| step.name))
            .finish()
    }
}

/// The transform names this runtime knows.
pub const TRANSFORMS: [&str; 7] = [
    "add_fields",
    "delete_fields",
    "update_fields",
    "filter_fields",
    "unwrap_envelope",
    "filter",
    "route",
];

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

impl TransformChain {
    /// Builds the chain of a `kind` connector from its `[transforms]` tables, in order.
    /// A table with `enabled = false` (or null) is left out. Every problem names the
    /// transform and key.
    pub fn new(kind: ConnectorKind, transforms: &[(String, Value)]) -> Result<Self, String> {
        let mut steps = Vec::new();
        for (name, config) in transforms {
            if config.is_null() {
                continue;
            }
            if !config.is_object() {
                return Err(format!("transforms.{name}: expected a table"));
            }
            match config.get("enabled") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => continue,
                Some(other) => {
                    return Err(format!(
                        "transforms.{name}.enabled: expected true or false, got {other}"
                    ));
                }
            }
            let (name, step): (&'static str, Box<dyn Step>) = match name.as_str() {
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
                        return Err(
                            "transforms.unwrap_envelope.field: must not be empty".to_owned()
                        );
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
                "proto_convert" | "flat_buffer_convert" | "avro_convert" => {
                    return Err(format!(
                        "transforms.{name}: not supported by this runtime yet (json, raw and text payloads are)"
                    ));
                }
                other => {
                    return Err(format!(
                        "transforms.{other}: unknown transform; known: {}",
                        TRANSFORMS.join(", ")
                    ));
                }
            };
            if steps.iter().any(|step: &Counted| step.name == name) {
                return Err(format!("transforms.{name}: listed twice"));
            }
            steps.push(Counted {
                name,
                step,
                messages_in: AtomicU64::new(0),
                messages_out: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            });
        }
        Ok(TransformChain {
            steps: Arc::new(steps),
        })
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The transform names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|step| step.name).collect()
    }

    /// Runs every transform on `message`, in order, until one drops it or fails.
    pub fn run(&self, message: &mut Message) -> Result<Verdict, TransformError> {
        for step in self.steps.iter() {
            step.messages_in.fetch_add(1, Ordering::Relaxed);
            match step.step.apply(message) {
                Ok(Verdict::Keep) => {
                    step.messages_out.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Verdict::Drop) => {
                    step.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(Verdict::Drop);
                }
                Err(error) => {
                    step.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(TransformError {
                        transform: step.name,
                        message: error,
                    });
                }
            }
        }
        Ok(Verdict::Keep)
    }

    /// Every transform's counters, in order.
    pub fn counts(&self) -> Vec<TransformCounts> {
        self.steps
            .iter()
            .map(|step| TransformCounts {
                name: step.name.to_owned(),
                messages_in: step.messages_in.load(Ordering::Relaxed),
                messages_out: step.messages_out.load(Ordering::Relaxed),
                dropped: step.dropped.load(Ordering::Relaxed),
                failed: step.failed.load(Ordering::Relaxed),
            })
            .collect()
    }
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
    use connector_sdk::Schema;
    use serde_json::json;

    /// The tables of a TOML document in file order (as the config crate reads them).
    struct InOrder(Vec<(String, Value)>);

    impl<'de> Deserialize<'de> for InOrder {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Tables;
            impl<'de> serde::de::Visitor<'de> for Tables {
                type Value = InOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("tables")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<InOrder, A::Error> {
                    let mut tables = Vec::new();
                    while let Some(entry) = map.next_entry::<String, Value>()? {
                        tables.push(entry);
                    }
                    Ok(InOrder(tables))
                }
            }
            deserializer.deserialize_map(Tables)
        }
    }

    fn chain(kind: ConnectorKind, toml_text: &str) -> Result<TransformChain, String> {
        let tables: InOrder = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        TransformChain::new(kind, &tables.0)
    }

    fn run(chain: &TransformChain, payload: Value) -> (Verdict, Value, Option<String>) {
        let bytes = serde_json::to_vec(&payload).unwrap();
        let mut message = Message {
            payload: Payload::decode(Schema::Json, bytes.into()).unwrap(),
            topic: None,
        };
        let verdict = chain.run(&mut message).unwrap();
        let out: Value =
            serde_json::from_slice(&message.payload.encode(Schema::Json).unwrap()).unwrap();
        (verdict, out, message.topic)
    }

    #[test]
    fn add_delete_update_in_config_order() {
        let chain = chain(
            ConnectorKind::Sink,
            r#"
[delete_fields]
enabled = true
fields = ["secret"]
[add_fields]
enabled = true
fields = [{ key = "source", value.static = "api" }, { key = "at", value.computed = "timestamp_millis" }, { key = "id", value.computed = "uuid_v7" }, { key = "when", value.computed = "date_time" }]
[update_fields]
fields = [{ key = "source", value = "override", condition = "key_exists" }, { key = "new", value.static = 1, condition = "key_not_exists" }, { key = "a", value = 9, condition = "key_not_exists" }]
"#,
        )
        .unwrap();
        assert_eq!(
            chain.names(),
            ["delete_fields", "add_fields", "update_fields"]
        );
        let (verdict, out, _) = run(&chain, json!({ "a": 1, "secret": "x" }));
        assert_eq!(verdict, Verdict::Keep);
        assert_eq!(out["a"], 1);
        assert_eq!(out["source"], "override");
        assert_eq!(out["new"], 1);
        assert!(out.get("secret").is_none());
        assert!(out["at"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(out["id"].as_str().unwrap().len(), 36);
        let when = out["when"].as_str().unwrap();
        assert!(
            when.len() == 27 && when.ends_with('Z') && when.starts_with("20"),
            "{when}"
        );
    }

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

    #[test]
    fn filter_fields_keeps_or_drops_fields_by_pattern() {
        let chain = chain(
            ConnectorKind::Sink,
            r#"
[filter_fields]
keep_fields = ["id"]
patterns = [{ key_pattern.starts_with = "user_" }, { value_pattern.greater_than = 10 }]
include_matching = true
"#,
        )
        .unwrap();
        let (_, out, _) = run(
            &chain,
            json!({ "id": 1, "user_name": "a", "n": 11, "m": 3, "other": "x" }),
        );
        assert_eq!(out, json!({ "id": 1, "user_name": "a", "n": 11 }));
        let drop_matching = chain_of(
            "[filter_fields]\npatterns = [{ key_pattern.regex = '^tmp' }]\ninclude_matching = false\n",
        );
        let (_, out, _) = run(&drop_matching, json!({ "tmp1": 1, "keep": 2 }));
        assert_eq!(out, json!({ "keep": 2 }));
    }

    fn chain_of(text: &str) -> TransformChain {
        chain(ConnectorKind::Source, text).unwrap()
    }

    #[test]
    fn unwrap_envelope_replaces_the_payload() {
        let chain = chain_of("[unwrap_envelope]\nfield = \"data\"\n");
        let (_, out, _) = run(&chain, json!({ "meta": 1, "data": { "x": [1] } }));
        assert_eq!(out, json!({ "x": [1] }));
        let (_, out, _) = run(&chain, json!({ "meta": 1 }));
        assert_eq!(out, json!({ "meta": 1 }), "no field: unchanged");
    }

    #[test]
    fn filter_drops_matching_messages_and_counts_them() {
        let chain = chain_of("[filter]\nfield = \"log.level\"\nmatches.equals = \"debug\"\n");
        assert_eq!(
            run(&chain, json!({ "log": { "level": "debug" } })).0,
            Verdict::Drop
        );
        assert_eq!(
            run(&chain, json!({ "log": { "level": "info" } })).0,
            Verdict::Keep
        );
        assert_eq!(run(&chain, json!({ "other": 1 })).0, Verdict::Keep);
        let counts = &chain.counts()[0];
        assert_eq!(
            (counts.messages_in, counts.messages_out, counts.dropped),
            (3, 2, 1)
        );
        let keep =
            chain_of("[filter]\nfield = \"n\"\nmatches.between = [1, 5]\nkeep_matching = true\n");
        assert_eq!(run(&keep, json!({ "n": 3 })).0, Verdict::Keep);
        assert_eq!(run(&keep, json!({ "n": 6 })).0, Verdict::Drop);
        let nulls = chain_of("[filter]\nfield = \"gone\"\nmatches = \"is_null\"\n");
        assert_eq!(run(&nulls, json!({ "n": 3 })).0, Verdict::Drop);
    }

    #[test]
    fn route_picks_the_topic_from_a_field() {
        let chain = chain_of(
            "[route]\nfield = \"kind\"\ntopics = { order = \"orders\", \"7\" = \"sevens\" }\ndefault_topic = \"misc\"\n",
        );
        assert_eq!(
            run(&chain, json!({ "kind": "order" })).2.as_deref(),
            Some("orders")
        );
        assert_eq!(
            run(&chain, json!({ "kind": 7 })).2.as_deref(),
            Some("sevens")
        );
        assert_eq!(
            run(&chain, json!({ "kind": "x" })).2.as_deref(),
            Some("misc")
        );
        let no_default = chain_of("[route]\nfield = \"kind\"\ntopics = { order = \"orders\" }\n");
        assert_eq!(run(&no_default, json!({ "kind": "x" })).2, None);
    }

    #[test]
    fn non_object_payloads_pass_through_field_transforms() {
        let chain = chain_of(
            "[add_fields]\nfields = [{ key = \"a\", value.static = 1 }]\n[filter]\nfield = \"a\"\nmatches = \"is_null\"\n",
        );
        let mut message = Message {
            payload: Payload::Text("hello".into()),
            topic: None,
        };
        assert_eq!(chain.run(&mut message).unwrap(), Verdict::Keep);
        assert!(matches!(message.payload, Payload::Text(ref t) if t == "hello"));
    }

    #[test]
    fn bad_configs_say_where() {
        let cases = [
            (
                "[add_fields]\nfields = [{ key = \"a\", value.computed = \"uuid_v9\" }]\n",
                "transforms.add_fields.fields[0].value",
            ),
            (
                "[add_fields]\nfields = [{ key = \"\", value.static = 1 }]\n",
                "transforms.add_fields.fields[0].key",
            ),
            (
                "[delete_fields]\nfield = [\"a\"]\n",
                "transforms.delete_fields",
            ),
            (
                "[filter_fields]\npatterns = [{ key_pattern.regex = \"(\" }]\n",
                "transforms.filter_fields.patterns[0].key_pattern.regex",
            ),
            (
                "[unwrap_envelope]\nfield = \"\"\n",
                "transforms.unwrap_envelope.field",
            ),
            (
                "[filter]\nfield = \"a\"\nmatches.between = [5, 1]\n",
                "transforms.filter.matches.between",
            ),
            (
                "[add_fields]\nenabled = \"yes\"\nfields = []\n",
                "transforms.add_fields.enabled",
            ),
            ("[avro_convert]\nenabled = true\n", "not supported"),
            ("[add_feilds]\nfields = []\n", "unknown transform"),
        ];
        for (text, expected) in cases {
            let error = chain(ConnectorKind::Source, text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error =
            chain(ConnectorKind::Sink, "[route]\nfield = \"a\"\ntopics = {}\n").unwrap_err();
        assert!(error.contains("only sources"), "{error}");
        let disabled = chain(
            ConnectorKind::Sink,
            "[add_fields]\nenabled = false\nfields = \"nonsense\"\n",
        )
        .unwrap();
        assert!(
            disabled.is_empty(),
            "a disabled transform is not even parsed"
        );
    }
}
