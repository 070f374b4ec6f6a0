//! Per-connector environment overrides (upstream's naming):
//! `IGGY_CONNECTORS_{SINK|SOURCE}_{KEY}_{FIELD}`, with the key in upper case and `-`
//! as `_`.
//!
//! No field is listed here. As the runtime config's variables are (`load.rs`), they
//! are derived from the config types: a config of each kind with every key set is
//! written out, and the same schema walk ([`crate::load::settable_keys`] over
//! [`crate::load::node_of`]) finds each key a variable sets, named by its path in upper
//! case with `_` for `.` (`ENABLED`, `RETRY_MAX_ATTEMPTS`) and read by the kind of value
//! it holds. Besides those, an entry of a list of tables is set by its index
//! (`STREAMS_0_TOPICS`), and an entry of an open table by its name, one level deep and
//! lower-cased, its value's type guessed (`PLUGIN_CONFIG_BATCH_SIZE`). The key itself is
//! no field: the variable's name holds it. So a field added to a config type is
//! overridable with no second edit.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use connector_sdk::{ConnectorKind, Schema};
use transforms::StreamPayload;

use crate::connector::{
    ConnectorCommon, DeadLetterTarget, ErrorPolicy, PluginConfigFormat, SinkConfig, SourceConfig,
};
use crate::load::{ENV_PREFIX, Node, env_field, node_of, settable_keys};
use crate::runtime::ConnectorRetry;
use crate::streams::{SinkStream, SourceStream, default_batch_length, default_interval};

/// How a variable's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Bool,
    Integer,
    String,
    List,
    /// A plugin field, whose type the runtime does not know: booleans, integers, floats
    /// and `[lists]` are recognised, anything else is a string.
    Guess,
}

impl ValueKind {
    fn of(node: &Node) -> Self {
        match node {
            Node::Bool => ValueKind::Bool,
            Node::Integer => ValueKind::Integer,
            Node::List => ValueKind::List,
            // A duration is checked where the config is read, which names the key.
            Node::String | Node::Duration => ValueKind::String,
            Node::Table(_) | Node::OpenMap => ValueKind::Guess,
        }
    }
}

/// A key a variable sets: its path (`["retry", "max_attempts"]`) and how the value is
/// read.
type Setting = (Vec<String>, ValueKind);

/// What the variables of one connector kind can set, each by its field part.
#[derive(Debug, Default)]
struct Fields {
    /// Keys at a fixed place: `ENABLED`, `RETRY_MAX_ATTEMPTS`.
    keys: BTreeMap<String, Setting>,
    /// Lists of tables (`STREAMS`): the list's key, and what a variable sets in one
    /// entry (`TOPICS`).
    lists: BTreeMap<String, (String, BTreeMap<String, Setting>)>,
    /// Open tables, whose entries the user names (`PLUGIN_CONFIG`): the table's key.
    open: BTreeMap<String, String>,
}

/// Where a variable's value goes.
enum Target<'a> {
    /// A key at a fixed place.
    Key(&'a Setting),
    /// A key of the `index`th entry of the list `list`.
    ListEntry {
        list: &'a str,
        index: usize,
        setting: &'a Setting,
    },
    /// The entry `entry` of the open table `table`.
    OpenEntry { table: &'a str, entry: String },
}

impl Fields {
    /// The fields of a config written with every key set.
    fn of(mut config: toml::Table) -> Self {
        config.remove("key");
        let mut fields = Fields::default();
        // A list of tables is not set whole but entry by entry, by index.
        let lists: Vec<String> = config
            .iter()
            .filter(|(_, value)| {
                value
                    .as_array()
                    .and_then(|items| items.first())
                    .is_some_and(toml::Value::is_table)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in lists {
            let Some(entry) = config
                .remove(&key)
                .and_then(|items| items.as_array()?.first().cloned())
            else {
                continue;
            };
            let (entry_keys, _) = Fields::settings(&node_of(&entry));
            fields.lists.insert(env_field(&key), (key, entry_keys));
        }
        let (keys, open) = Fields::settings(&node_of(&toml::Value::Table(config)));
        fields.keys = keys;
        fields.open = open;
        fields
    }

    /// The keys of `schema` a variable sets, and its open tables, by field.
    fn settings(schema: &Node) -> (BTreeMap<String, Setting>, BTreeMap<String, String>) {
        let mut paths = BTreeMap::new();
        settable_keys(schema, "", &mut paths);
        let mut keys = BTreeMap::new();
        let mut open = BTreeMap::new();
        for (path, node) in paths {
            if node == Node::OpenMap {
                open.insert(env_field(&path), path);
            } else {
                let segments = path.split('.').map(str::to_owned).collect();
                keys.insert(env_field(&path), (segments, ValueKind::of(&node)));
            }
        }
        (keys, open)
    }

    /// What `field` (what follows the connector's prefix) sets; the error says why it
    /// sets nothing, with the nearest field for a typo (`prefix` makes it a variable).
    fn target(&self, field: &str, prefix: &str) -> Result<Target<'_>, String> {
        if let Some(setting) = self.keys.get(field) {
            return Ok(Target::Key(setting));
        }
        for (name, (list, entry_keys)) in &self.lists {
            let Some(rest) = field
                .strip_prefix(name.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
            else {
                continue;
            };
            let (index, entry_field) = rest
                .split_once('_')
                .and_then(|(index, entry_field)| Some((index.parse::<usize>().ok()?, entry_field)))
                .ok_or_else(|| format!("expected {name}_<index>_<FIELD>"))?;
            let setting = entry_keys.get(entry_field).ok_or_else(|| {
                let hint =
                    crate::suggest::nearest(entry_field, entry_keys.keys().map(String::as_str))
                        .map(|near| format!("; did you mean {prefix}{name}_{index}_{near}?"))
                        .unwrap_or_default();
                format!("unknown field {entry_field} of a [[{list}]] entry{hint}")
            })?;
            return Ok(Target::ListEntry {
                list,
                index,
                setting,
            });
        }
        for (name, table) in &self.open {
            if let Some(entry) = field
                .strip_prefix(name.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
                .filter(|entry| !entry.is_empty())
            {
                return Ok(Target::OpenEntry {
                    table,
                    entry: entry.to_lowercase(),
                });
            }
        }
        let hint = crate::suggest::nearest(field, self.keys.keys().map(String::as_str))
            .map(|near| format!("; did you mean {prefix}{near}?"))
            .unwrap_or_default();
        Err(format!("unknown connector field{hint}"))
    }
}

/// The fields of `kind`'s variables, derived once.
fn fields(kind: ConnectorKind) -> &'static Fields {
    static SINK: OnceLock<Fields> = OnceLock::new();
    static SOURCE: OnceLock<Fields> = OnceLock::new();
    let cell = match kind {
        ConnectorKind::Sink => &SINK,
        ConnectorKind::Source => &SOURCE,
    };
    cell.get_or_init(|| Fields::of(every_key(kind)))
}

/// A config of `kind` written with every key its flat form has: options set, and the
/// values written only when not at their default set to another.
fn every_key(kind: ConnectorKind) -> toml::Table {
    let common = ConnectorCommon {
        plugin_config_format: Some(PluginConfigFormat::Json),
        retry: Some(ConnectorRetry::default()),
        error_policy: ErrorPolicy::DeadLetter,
        dead_letter: Some(DeadLetterTarget {
            stream: String::new(),
            topic: String::new(),
        }),
        memory_budget: Some(0),
        // Empty, it is an open table: variables name its entries.
        plugin_config: Some(serde_json::Value::Object(serde_json::Map::new())),
        // Transforms (tables of tables) are left empty, and so unwritten: no variable
        // sets one.
        ..ConnectorCommon::default()
    };
    let payload = StreamPayload {
        avro_schema_json: Some(String::new()),
        avro_schema_path: Some(String::new()),
        proto_descriptor_set: Some(String::new()),
        proto_message_type: Some(String::new()),
        flat_buffer_schema_path: Some(String::new()),
        flat_buffer_root_table: Some(String::new()),
        ..StreamPayload::new(Schema::default())
    };
    let config = match kind {
        ConnectorKind::Sink => toml::Value::try_from(SinkConfig {
            common,
            streams: vec![SinkStream {
                stream: String::new(),
                topics: Vec::new(),
                payload,
                batch_length: default_batch_length(),
                poll_interval: default_interval(),
                consumer_group: Some(String::new()),
            }],
        }),
        ConnectorKind::Source => toml::Value::try_from(SourceConfig {
            common,
            streams: vec![SourceStream {
                stream: String::new(),
                topic: String::new(),
                payload,
                batch_length: default_batch_length(),
                max_send_bytes: Some(0),
                linger_time: default_interval(),
            }],
            max_unsaved_sends: 1,
            verified_resume: true,
        }),
    };
    match config {
        Ok(toml::Value::Table(table)) => table,
        // Not reached: every type here writes as TOML (a test reads the result).
        _ => toml::Table::new(),
    }
}

/// The start of every override of a kind: `IGGY_CONNECTORS_SINK_`.
pub(crate) fn kind_prefix(kind: ConnectorKind) -> String {
    format!("{ENV_PREFIX}{}_", kind.as_str().to_uppercase())
}

/// The start of every override of one connector: `IGGY_CONNECTORS_SINK_MY_KEY_`.
pub(crate) fn override_prefix(kind: ConnectorKind, key: &str) -> String {
    format!(
        "{}{}_",
        kind_prefix(kind),
        key.to_uppercase().replace('-', "_")
    )
}

/// Whether `name` is a per-connector override (of some connector, existing or not).
pub(crate) fn is_connector_override(name: &str) -> bool {
    [ConnectorKind::Sink, ConnectorKind::Source]
        .into_iter()
        .any(|kind| name.starts_with(&kind_prefix(kind)))
}

/// Whether `field` (what follows `IGGY_CONNECTORS_{SINK|SOURCE}_{KEY}_`) is one an
/// override of `kind` may set: used to tell where the key ends in a variable that
/// matches no connector, to suggest the one meant.
pub(crate) fn is_override_field(kind: ConnectorKind, field: &str) -> bool {
    fields(kind).target(field, "").is_ok()
}

/// Applies the environment overrides of one connector (see the module's documentation
/// for the fields) to its file's table; returns the variables applied. An error names
/// the variable.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    kind: ConnectorKind,
    key: &str,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let prefix = override_prefix(kind, key);
    let fields = fields(kind);
    let mut applied = Vec::new();
    // A list entry past the file's is made empty for variables to fill, so no more can
    // be filled than there are variables: an index beyond that is a mistake (and
    // growing the list to it could take all the memory there is).
    let variables = env
        .range(prefix.clone()..)
        .take_while(|(name, _)| name.starts_with(&prefix))
        .count();
    let in_file: BTreeMap<String, usize> = table
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), value.as_array()?.len())))
        .collect();
    for (name, raw) in env.range(prefix.clone()..) {
        let Some(field) = name.strip_prefix(&prefix) else {
            break;
        };
        let in_name = |message: String| format!("{name}: {message}");
        let value = |kind: ValueKind| parse_override(raw, kind).map_err(in_name);
        match fields.target(field, &prefix).map_err(in_name)? {
            Target::Key((path, kind)) => insert(table, path, value(*kind)?).map_err(in_name)?,
            Target::ListEntry {
                list,
                index,
                setting: (path, kind),
            } => {
                let items = table
                    .entry(list)
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                let toml::Value::Array(items) = items else {
                    return Err(in_name(format!("{list} is not a list")));
                };
                let in_file = in_file.get(list).copied().unwrap_or_default();
                if index >= in_file + variables {
                    return Err(in_name(format!(
                        "index {index} is past the end: the file has {in_file} [[{list}]] entries, and this connector's {variables} variables can add at most as many after them (up to index {})",
                        in_file + variables - 1
                    )));
                }
                while items.len() <= index {
                    items.push(toml::Value::Table(toml::Table::new()));
                }
                let toml::Value::Table(entry) = &mut items[index] else {
                    return Err(in_name(format!("{list}[{index}] is not a table")));
                };
                insert(entry, path, value(*kind)?).map_err(in_name)?;
            }
            Target::OpenEntry { table: open, entry } => {
                // A text the guess cannot read (`[::1]:5432`, a regex) is a string: the
                // plugin's description types it later (`typed_plugin_config`).
                let value = parse_override(raw, ValueKind::Guess)
                    .unwrap_or_else(|_| toml::Value::String(raw.clone()));
                let open_table = table
                    .entry(open)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(open_table) = open_table else {
                    return Err(in_name(format!("{open} is not a table")));
                };
                open_table.insert(entry, value);
            }
        }
        applied.push(name.clone());
    }
    Ok(applied)
}

/// The text of each `plugin_config` entry an environment variable sets for this
/// connector, by entry name. Its value in the config was typed by a guess
/// (`..._PASSWORD=123456` reads as a number); the plugin's description of its config
/// knows the type, and a runner types the text with it.
pub(crate) fn plugin_config_texts(
    kind: ConnectorKind,
    key: &str,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let prefix = override_prefix(kind, key);
    let fields = fields(kind);
    env.range(prefix.clone()..)
        .map_while(|(name, raw)| Some((name.strip_prefix(&prefix)?, raw)))
        .filter_map(|(field, raw)| match fields.target(field, &prefix) {
            Ok(Target::OpenEntry {
                table: "plugin_config",
                entry,
            }) => Some((entry, raw.clone())),
            _ => None,
        })
        .collect()
}

/// Sets the key at `path` in `table`, making the tables on the way.
fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for parent in parents {
        let next = current
            .entry(parent.as_str())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = next else {
            return Err(format!("{parent} is not a table"));
        };
        current = next;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn parse_override(raw: &str, kind: ValueKind) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    match kind {
        ValueKind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        ValueKind::Integer => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        ValueKind::String => Ok(toml::Value::String(raw.to_owned())),
        ValueKind::List => Ok(toml::Value::Array(
            crate::load::parse_list(trimmed)?
                .into_iter()
                .map(toml::Value::String)
                .collect(),
        )),
        ValueKind::Guess => guess(raw, 0),
    }
}

/// Deepest lists in lists a plugin field's value may nest (`[[1]]` is two deep): the
/// value is read recursively, and a variable can hold enough brackets to overflow the
/// stack.
const MAX_LIST_DEPTH: usize = 32;

/// A plugin field's value, its type guessed; `depth` lists are open around it.
fn guess(raw: &str, depth: usize) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') {
        if depth == MAX_LIST_DEPTH {
            return Err(format!("lists nested more than {MAX_LIST_DEPTH} deep"));
        }
        let items = crate::load::parse_list(trimmed)?;
        return Ok(toml::Value::Array(
            items
                .iter()
                .map(|item| guess(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ));
    }
    Ok(match trimmed.to_ascii_lowercase().as_str() {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .or_else(|_| trimmed.parse::<f64>().map(toml::Value::Float))
            .unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::parse_connector_toml;
    use crate::flat;

    const SINK: &str = "type = \"sink\"\nkey = \"s\"\nenabled = true\nversion = 1\nname = \"S\"\npath = \"p\"\n[[streams]]\nstream = \"a\"\ntopics = [\"t\"]\nschema = \"json\"\n";

    fn with(text: &str, kind: ConnectorKind, vars: &[(&str, &str)]) -> Result<toml::Table, String> {
        let mut table: toml::Table = toml::from_str(text).unwrap();
        let key = table["key"].as_str().unwrap().to_owned();
        let env = vars
            .iter()
            .map(|(field, value)| {
                (
                    format!("{}{field}", override_prefix(kind, &key)),
                    (*value).to_owned(),
                )
            })
            .collect();
        apply_env_overrides(&mut table, kind, &key, &env).map(|_| table)
    }

    #[test]
    fn every_key_a_config_reads_is_overridable_without_being_listed() {
        for kind in [ConnectorKind::Sink, ConnectorKind::Source] {
            let fields = fields(kind);
            // The keys each reader takes, as serde and the readers know them: none
            // of them is listed for the overrides.
            let (top, stream) = match kind {
                ConnectorKind::Sink => (
                    flat::keys_read_by(SinkConfig::read),
                    flat::keys_read_by(SinkStream::read),
                ),
                ConnectorKind::Source => (
                    flat::keys_read_by(SourceConfig::read),
                    flat::keys_read_by(SourceStream::read),
                ),
            };
            for key in top {
                // The variable's name holds the key; transforms are tables of tables.
                if key == "key" || key == "transforms" {
                    continue;
                }
                let field = env_field(key);
                // Set whole, entry by entry (a list or an open table), or key by key
                // (a fixed table).
                let settable = is_override_field(kind, &field)
                    || fields.lists.contains_key(&field)
                    || fields.open.contains_key(&field)
                    || fields
                        .keys
                        .keys()
                        .any(|name| name.starts_with(&format!("{field}_")));
                assert!(settable, "{kind} `{key}` has no override");
            }
            for key in stream {
                let field = format!("STREAMS_0_{}", env_field(key));
                assert!(is_override_field(kind, &field), "{kind} {field}");
            }
        }
    }

    #[test]
    fn overrides_set_keys_nested_tables_list_entries_and_plugin_fields() {
        let table = with(
            SINK,
            ConnectorKind::Sink,
            &[
                ("BENCHMARK", "true"),
                ("PLUGIN_CONFIG_FORMAT", "yaml"),
                ("RETRY_MAX_ATTEMPTS", "3"),
                ("ERROR_POLICY", "dead_letter"),
                ("DEAD_LETTER_STREAM", "dl"),
                ("DEAD_LETTER_TOPIC", "failed"),
                ("STREAMS_0_PROTO_MESSAGE_TYPE", "a.B"),
                ("STREAMS_0_SCHEMA", "proto"),
                ("STREAMS_0_PROTO_DESCRIPTOR_SET", "/d.pb"),
                ("PLUGIN_CONFIG_FORMAT_X", "1.5"),
            ],
        )
        .unwrap();
        let config = parse_connector_toml(&toml::to_string(&table).unwrap()).unwrap();
        let crate::ConnectorConfig::Sink(sink) = config else {
            panic!("a sink");
        };
        assert!(sink.common.benchmark);
        assert_eq!(
            sink.common.plugin_config_format,
            Some(PluginConfigFormat::Yaml)
        );
        assert_eq!(sink.common.retry.map(|retry| retry.max_attempts), Some(3));
        assert_eq!(
            sink.common
                .dead_letter
                .map(|target| target.topic)
                .as_deref(),
            Some("failed")
        );
        assert_eq!(sink.streams[0].payload.schema, Schema::Proto);
        assert_eq!(
            sink.streams[0].payload.proto_message_type.as_deref(),
            Some("a.B")
        );
        assert_eq!(
            sink.common.plugin_config,
            Some(serde_json::json!({ "format_x": 1.5 }))
        );
    }

    #[test]
    fn overrides_that_set_nothing_name_the_variable_and_the_nearest() {
        let error = with(SINK, ConnectorKind::Sink, &[("ENABLD", "true")]).unwrap_err();
        assert_eq!(
            error,
            "IGGY_CONNECTORS_SINK_S_ENABLD: unknown connector field; did you mean IGGY_CONNECTORS_SINK_S_ENABLED?"
        );
        let error = with(SINK, ConnectorKind::Sink, &[("STREAMS_0_TOPICZ", "[a]")]).unwrap_err();
        assert_eq!(
            error,
            "IGGY_CONNECTORS_SINK_S_STREAMS_0_TOPICZ: unknown field TOPICZ of a [[streams]] entry; did you mean IGGY_CONNECTORS_SINK_S_STREAMS_0_TOPICS?"
        );
        let error = with(SINK, ConnectorKind::Sink, &[("STREAMS_X_TOPICS", "[a]")]).unwrap_err();
        assert!(
            error.ends_with("expected STREAMS_<index>_<FIELD>"),
            "{error}"
        );
        let error = with(SINK, ConnectorKind::Sink, &[("VERBOSE", "yes")]).unwrap_err();
        assert!(
            error.ends_with("expected true or false, got \"yes\""),
            "{error}"
        );
        // A source's own field is no sink's.
        assert!(!is_override_field(ConnectorKind::Sink, "MAX_UNSAVED_SENDS"));
        assert!(is_override_field(
            ConnectorKind::Source,
            "MAX_UNSAVED_SENDS"
        ));
        assert!(!is_override_field(ConnectorKind::Sink, "KEY"));
    }

    #[test]
    fn no_runtime_variable_is_taken_for_a_connector_override() {
        assert!(!fields(ConnectorKind::Sink).keys.is_empty());
        for name in crate::load::environment_variables() {
            assert!(!is_connector_override(&name), "{name}");
        }
    }
}
