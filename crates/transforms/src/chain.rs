//! The transforms and the chain that runs them in config order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use connector_sdk::{ConnectorKind, Schema};
use serde_json::Value;

use crate::payload::{Codec, Payload};
use crate::steps;

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

/// One transform, applied to a message at a time.
pub(crate) trait Step: Send + Sync {
    fn apply(&self, message: &mut Message) -> Result<Verdict, String>;

    /// The codec of the binary format a convert transform reads or writes.
    fn codec(&self) -> Option<Codec> {
        None
    }

    /// Whether it is a convert transform that decodes its binary format.
    fn decodes(&self) -> bool {
        false
    }

    /// The format a convert transform writes (its `target_format`).
    fn writes(&self) -> Option<Schema> {
        None
    }
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
pub const TRANSFORMS: [&str; 10] = [
    "add_fields",
    "delete_fields",
    "update_fields",
    "filter_fields",
    "unwrap_envelope",
    "filter",
    "route",
    "proto_convert",
    "avro_convert",
    "flat_buffer_convert",
];

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
            let (name, step) = steps::build(kind, name, config)?;
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

    /// The codec, with its message schema, of the first convert transform that reads or
    /// writes `schema` (Avro, Protobuf or FlatBuffers): how a tool shows or writes
    /// samples of a stream that names no message schema of its own.
    pub fn codec_for(&self, schema: Schema) -> Option<Codec> {
        self.steps
            .iter()
            .filter_map(|step| step.step.codec())
            .find(|codec| codec.schema == schema)
    }

    /// The format the last convert transform of the chain writes, if there is one: what
    /// a sink's plugin gets, whatever its stream's schema.
    pub fn output_schema(&self) -> Option<Schema> {
        self.steps.iter().rev().find_map(|step| step.step.writes())
    }

    /// The codec of the first transform when it is a convert transform that decodes
    /// (`proto_convert` from proto, say): the format messages must arrive in.
    pub fn input_codec(&self) -> Option<Codec> {
        let first = self.steps.first()?;
        first.step.decodes().then(|| first.step.codec()).flatten()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tables of a TOML document in file order (as the config crate reads them).
    struct InOrder(Vec<(String, Value)>);

    impl<'de> serde::Deserialize<'de> for InOrder {
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
            (
                "[avro_convert]\nenabled = true\n",
                "transforms.avro_convert: missing field `source_format`",
            ),
            (
                "[avro_convert]\nsource_format = \"json\"\ntarget_format = \"proto\"\nschema_json = \"\"\n",
                "transforms.avro_convert: cannot convert json to proto",
            ),
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
