//! Property tests: no input makes a config parser panic or hang. Arbitrary bytes,
//! TOML-ish text and valid TOML with arbitrary values for the known keys, as the
//! runtime config file (through `load`), as `IGGY_CONNECTORS_*` variables (through
//! `load_with_env`, which takes the environment as a value: nothing here touches the
//! process environment), and as connector config files and their per-connector
//! variables (through `LocalProvider::open`). Each input gets a config or an error
//! that says something, within a deadline.
//!
//! CI runs a few cases per property (`PROPTEST_CASES` overrides it). A long run:
//!
//! ```text
//! PROPTEST_CASES=10000 cargo test -p config-provider --test runtime_config properties
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use config_provider::{
    ACTIVE_VERSIONS_FILE, ConfigError, LocalProvider, RuntimeConfig, config_keys,
    environment_variables, load, load_with_env, parse_connector_toml,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;

/// Cases per property in CI; `PROPTEST_CASES` sets another number.
const CASES: u32 = 64;

/// Longest a parser may take on one input before it counts as a hang (debug build, a
/// loaded machine: generous).
const DEADLINE: Duration = Duration::from_secs(20);

#[path = "../../../../tests/support/property.rs"]
#[allow(dead_code)]
mod property;

fn config() -> ProptestConfig {
    property::config(CASES)
}

fn within<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    property::within(what, DEADLINE, work)
}

/// An empty directory under the temporary directory, the same for every case of a
/// property (each property has its own `label`), so that a long run leaves one each.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "config-provider-properties-{}/{label}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file for one case, written with `bytes`.
fn case_file(label: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(label).join("config.toml");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A failed load must say what is wrong and where: every problem names its file or
/// variable and has a message.
fn check_error(error: &ConfigError) {
    assert!(!error.problems.is_empty(), "an error without problems");
    for problem in &error.problems {
        assert!(!problem.source.is_empty(), "no source: {problem:?}");
        assert!(!problem.message.is_empty(), "no message: {problem:?}");
    }
    assert!(!error.to_string().is_empty());
}

/// Loads the runtime config from `file` and `env` within the deadline.
fn load_checked(file: Option<PathBuf>, env: Vec<(String, String)>) {
    let result = within("load_with_env", move || {
        load_with_env(file.as_deref(), env).map(|loaded| loaded.redacted())
    });
    if let Err(error) = result {
        check_error(&error);
    }
}

// ---- values -------------------------------------------------------------------------

/// A file that exists (for `${file:...}` references), made once.
fn secret_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = scratch("secret").join("secret");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        path
    })
}

/// Durations as users write them, and near misses: no unit, unknown units, signs,
/// fractions, overflow, spaces.
fn duration_text() -> impl Strategy<Value = String> {
    let units = select(vec![
        "", "ns", "us", "µs", "ms", "s", "sec", "m", "min", "h", "d", "days", "w", "y", "S",
    ]);
    prop_oneof![
        (any::<u64>(), units.clone()).prop_map(|(n, unit)| format!("{n}{unit}")),
        (0u64..100_000, units.clone()).prop_map(|(n, unit)| format!("{n}{unit}")),
        (0u64..1000, units.clone(), 0u64..1000, units)
            .prop_map(|(a, u, b, v)| format!("{a}{u} {b}{v}")),
        select(vec![
            "10s",
            "0s",
            "-1s",
            "1.5s",
            "+3s",
            " 5 m ",
            "soon",
            "",
            "s",
            "18446744073709551615s",
            "18446744073709551616ns",
            "999999999999999999999999d",
            "1h30m",
            "1e3ms",
        ])
        .prop_map(str::to_owned),
    ]
}

/// `${env:...}` and `${file:...}` references: unset or odd variable names, missing
/// files, a directory, a file that exists, and malformed ones.
fn secret_reference() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z_]{0,12}".prop_map(|name| format!("${{env:{name}}}")),
        Just("${env:CARGO_PKG_NAME}".to_owned()),
        Just("${env:A=B}".to_owned()),
        Just("${env:NUL\0NAME}".to_owned()),
        Just(format!("${{file:{}}}", secret_file().display())),
        Just(format!("${{file:{}}}", std::env::temp_dir().display())),
        "[a-z/]{0,12}".prop_map(|path| format!("${{file:/nonexistent/{path}}}")),
        Just("${file:}".to_owned()),
        Just("${".to_owned()),
        Just("${env:".to_owned()),
        Just("${nope:x}".to_owned()),
    ]
}

/// Strings a config value might hold: anything, durations, secret references,
/// addresses, URLs, and the words some keys accept.
fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,24}",
        1 => any::<String>(),
        2 => duration_text(),
        2 => secret_reference(),
        1 => "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|localhost|\\[::1\\]|::|[a-z]{1,8}):[0-9]{0,6}",
        1 => "(http|https|ftp)?(://)?[a-z.]{0,12}(:[0-9]{1,6})?(/[a-z{}]{0,8}){0,3}",
        2 => select(vec![
            "local", "http", "json", "text", "grpc", "raw", "avro", "proto", "true", "", "*",
            "/metrics", "metrics", "/", "GET", "sink", "source",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Any TOML value, nested a little.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let datetime = select(vec![
        "1979-05-27T07:32:00Z",
        "1979-05-27",
        "07:32:00",
        "1979-05-27T00:32:00.999999-07:00",
    ])
    .prop_map(|text| toml::Value::Datetime(text.parse().unwrap()));
    let leaf = prop_oneof![
        4 => string_value().prop_map(toml::Value::String),
        2 => any::<i64>().prop_map(toml::Value::Integer),
        2 => (-5i64..100_000).prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        2 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => datetime,
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|map| toml::Value::Table(map.into_iter().collect())),
        ]
    })
}

/// Sets `value` at the dotted `path` of `table`, replacing whatever is in the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(last) = segments.pop() else {
        return;
    };
    let mut current = table;
    for segment in segments {
        let entry = current
            .entry(segment)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            unreachable!("made a table above")
        };
        current = next;
    }
    current.insert(last.to_owned(), value);
}

// ---- the runtime config -------------------------------------------------------------

fn known_keys() -> Vec<String> {
    config_keys().into_iter().collect()
}

/// Every key of the runtime config with its default value, where the default config
/// has one (the http provider's keys are not in it).
fn defaults() -> Vec<(String, Option<toml::Value>)> {
    let defaults = toml::Value::try_from(RuntimeConfig::default()).unwrap();
    config_keys()
        .into_iter()
        .map(|key| {
            let default = key
                .split('.')
                .try_fold(&defaults, |value, segment| value.get(segment))
                .cloned();
            (key, default)
        })
        .collect()
}

/// A value of the type `default` has (a duration for a duration), mostly; any value
/// now and then.
fn value_like(default: Option<toml::Value>) -> BoxedStrategy<toml::Value> {
    let like = match default {
        Some(toml::Value::String(text))
            if connector_sdk::duration::parse_duration(&text).is_ok() =>
        {
            duration_text().prop_map(toml::Value::String).boxed()
        }
        Some(toml::Value::String(_)) => string_value().prop_map(toml::Value::String).boxed(),
        Some(toml::Value::Integer(_)) => prop_oneof![
            3 => (0i64..2000).prop_map(toml::Value::Integer),
            1 => any::<i64>().prop_map(toml::Value::Integer),
        ]
        .boxed(),
        Some(toml::Value::Boolean(_)) => any::<bool>().prop_map(toml::Value::Boolean).boxed(),
        Some(toml::Value::Array(_)) => vec(string_value().prop_map(toml::Value::String), 0..4)
            .prop_map(toml::Value::Array)
            .boxed(),
        // The http provider's keys: strings, durations and integers.
        None => prop_oneof![
            3 => string_value().prop_map(toml::Value::String),
            1 => duration_text().prop_map(toml::Value::String),
            1 => (0i64..100).prop_map(toml::Value::Integer),
        ]
        .boxed(),
        _ => toml_value().boxed(),
    };
    prop_oneof![12 => like, 1 => toml_value()].boxed()
}

/// A known key and a value for it.
fn setting() -> impl Strategy<Value = (String, toml::Value)> {
    select(defaults()).prop_flat_map(|(key, default)| {
        value_like(default).prop_map(move |value| (key.clone(), value))
    })
}

/// The tables of the runtime config (`http`, `http.cors`, ...).
fn known_sections() -> Vec<String> {
    let mut sections: Vec<String> = config_keys()
        .iter()
        .filter_map(|key| key.rsplit_once('.').map(|(section, _)| section.to_owned()))
        .collect();
    sections.sort();
    sections.dedup();
    sections
}

/// A TOML key as written: bare, dotted, quoted, or not a key at all.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(known_keys()).prop_map(|key| {
            key.rsplit_once('.').map_or(key.clone(), |(_, name)| name.to_owned())
        }),
        2 => select(known_keys()),
        2 => "[A-Za-z0-9_-]{1,16}",
        1 => "\\PC{0,12}".prop_map(|key| toml::Value::String(key).to_string()),
        1 => "[^=\n]{0,12}",
    ]
}

/// One line of a TOML-ish file: headers, assignments with well-formed or mangled
/// values, and garbage.
fn toml_line() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        3 => select(known_sections()),
        1 => "[a-z._]{0,16}",
        1 => "[^\n]{0,12}",
    ];
    let value = prop_oneof![
        4 => toml_value().prop_map(|value| value.to_string()),
        1 => "[^\n]{0,24}",
        1 => select(vec![
            "\"unterminated", "'''", "[1, 2", "{ a = 1", "nan", "-inf", "1979-13-45",
            "0x1F", "0o9", "1_000", "1__0", "+", "\"\\u0000\"", "\"\\uD800\"", "[[]]",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        2 => section.clone().prop_map(|section| format!("[{section}]")),
        1 => section.prop_map(|section| format!("[[{section}]]")),
        6 => (key_text(), value).prop_map(|(key, value)| format!("{key} = {value}")),
        1 => "[^\n]{0,40}",
        1 => Just(String::new()),
    ]
}

/// Variable names: the runtime's, near misses, per-connector ones, and anything.
fn variable_name() -> impl Strategy<Value = String> {
    let known: Vec<String> = environment_variables().into_iter().collect();
    prop_oneof![
        6 => select(known),
        2 => "[A-Z_]{0,24}".prop_map(|rest| format!("IGGY_CONNECTORS_{rest}")),
        1 => "(SINK|SOURCE)_[A-Z_]{0,12}".prop_map(|rest| format!("IGGY_CONNECTORS_{rest}")),
        1 => "\\PC{0,16}",
    ]
}

/// Values as a shell would set them: anything, and what the keys expect (integers,
/// booleans in any case, durations, lists, quoted and not).
fn variable_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => string_value(),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "(?i)(true|false|yes|no|1|0)",
        2 => vec(string_value(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
        1 => "[\\[\\]\"', a-z]{0,16}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes as the config file, through the public loader.
    #[test]
    fn any_bytes_as_the_runtime_config_file(bytes in vec(any::<u8>(), 0..2048)) {
        let file = case_file("runtime-bytes", &bytes);
        let result = within("load", move || load(Some(&file)).map(|loaded| loaded.redacted()));
        if let Err(error) = result {
            check_error(&error);
        }
    }

    /// Text that looks like TOML: known sections and keys with values well-formed or
    /// not, and garbage lines.
    #[test]
    fn toml_like_text_as_the_runtime_config_file(lines in vec(toml_line(), 0..24)) {
        let file = case_file("runtime-toml-like", lines.join("\n").as_bytes());
        load_checked(Some(file), Vec::new());
    }

    /// Valid TOML: known keys (and a few unknown ones) with values mostly of their type.
    #[test]
    fn any_values_for_known_keys_in_the_runtime_config_file(
        settings in vec(
            prop_oneof![
                19 => setting(),
                1 => ("[a-z]{1,6}(\\.[a-z_]{1,8}){0,2}", toml_value()),
            ],
            0..8,
        ),
        http_provider in any::<bool>(),
    ) {
        let mut table = toml::Table::new();
        if http_provider {
            set_path(&mut table, "connectors.config_type", "http".into());
            set_path(&mut table, "connectors.base_url", "http://127.0.0.1:1".into());
        }
        for (key, value) in settings {
            set_path(&mut table, &key, value);
        }
        let text = toml::to_string(&table).unwrap();
        load_checked(Some(case_file("runtime-values", text.as_bytes())), Vec::new());
    }

    /// `IGGY_CONNECTORS_*` variables (and others) with any values, alone and over a
    /// file.
    #[test]
    fn any_environment(
        vars in vec((variable_name(), variable_value()), 0..12),
        lines in vec(toml_line(), 0..6),
    ) {
        load_checked(None, vars.clone());
        let file = case_file("runtime-env", lines.join("\n").as_bytes());
        load_checked(Some(file), vars);
    }
}

// ---- connector configs --------------------------------------------------------------

const SINK: &str = r#"type = "sink"
key = "stdout"
enabled = true
version = 0
name = "Stdout sink"
path = "target/release/libiggy_connector_stdout_sink"

[[streams]]
stream = "s"
topics = ["t"]
schema = "json"

[transforms.add_fields]
enabled = true
fields = [{ key = "a", value.static = 1 }]

[plugin_config]
print_payload = true
"#;

const SOURCE: &str = r#"type = "source"
key = "random"
enabled = true
version = 1
name = "Random"
path = "random"

[[streams]]
stream = "s"
topic = "t"
schema = "json"
batch_length = 10
linger_time = "5ms"

[plugin_config]
interval = "5ms"
"#;

/// Opens a provider over `dir` within the deadline.
fn open_checked(dir: PathBuf, env: BTreeMap<String, String>) {
    let result = within("LocalProvider::open", move || {
        LocalProvider::open(&dir, &env).map(|provider| provider.unmatched_overrides().len())
    });
    if let Err(error) = result {
        check_error(&error);
    }
}

/// Parses one connector file's text within the deadline; a config it accepts can be
/// written back as TOML and read again (what the provider does to store a version).
fn parse_checked(text: String) {
    within("parse_connector_toml", move || {
        if let Ok(config) = parse_connector_toml(&text) {
            let written = toml::to_string(&config)
                .unwrap_or_else(|error| panic!("accepted but not writable: {error}\n{text}"));
            if let Err(error) = parse_connector_toml(&written) {
                panic!("written back, not read again: {error}\n{text}\nwritten:\n{written}");
            }
        }
    });
}

/// Keys of a connector file, top level and in a `[[streams]]` entry.
fn connector_key() -> impl Strategy<Value = String> {
    let top = select(vec![
        "type",
        "key",
        "enabled",
        "version",
        "name",
        "path",
        "plugin_config_format",
        "verbose",
        "benchmark",
        "transforms",
        "retry",
        "retry.max_attempts",
        "retry.initial_backoff",
        "retry.max_backoff",
        "error_policy",
        "dead_letter",
        "dead_letter.stream",
        "dead_letter.topic",
        "plugin_config",
        "plugin_config.print_payload",
        "max_unsaved_sends",
        "verified_resume",
        "streams",
    ])
    .prop_map(str::to_owned);
    let transform = (
        select(vec![
            "add_fields",
            "delete_fields",
            "update_fields",
            "filter_fields",
            "unwrap_envelope",
            "filter",
            "route",
            "avro_convert",
            "nope",
        ]),
        select(vec![
            "",
            ".enabled",
            ".fields",
            ".field",
            ".patterns",
            ".matches",
            ".topics",
        ]),
    )
        .prop_map(|(name, key)| format!("transforms.{name}{key}"));
    prop_oneof![4 => top, 2 => transform, 1 => "[a-z_]{1,10}"]
}

fn stream_key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => select(vec![
            "stream",
            "topics",
            "topic",
            "schema",
            "batch_length",
            "poll_interval",
            "consumer_group",
            "max_send_bytes",
            "linger_time",
            "avro_schema_json",
            "avro_schema_path",
            "proto_descriptor_set",
            "proto_message_type",
            "flat_buffer_schema_path",
            "flat_buffer_root_table",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ]
}

/// What a change to a connector file does.
#[derive(Debug, Clone)]
enum Change {
    Set(String, toml::Value),
    Remove(String),
    SetInStream(usize, String, toml::Value),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (connector_key(), toml_value()).prop_map(|(key, value)| Change::Set(key, value)),
        1 => connector_key().prop_map(Change::Remove),
        4 => (0usize..3, stream_key(), toml_value())
            .prop_map(|(index, key, value)| Change::SetInStream(index, key, value)),
    ]
}

/// `base` with `changes` made, as TOML text.
fn changed(base: &str, changes: &[Change]) -> String {
    let mut table: toml::Table = toml::from_str(base).unwrap();
    for change in changes {
        match change {
            Change::Set(key, value) => set_path(&mut table, key, value.clone()),
            Change::Remove(key) => {
                table.remove(key);
            }
            Change::SetInStream(index, key, value) => {
                let streams = table
                    .entry("streams")
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(items) = streams {
                    while items.len() <= *index {
                        items.push(toml::Value::Table(toml::Table::new()));
                    }
                    if let toml::Value::Table(entry) = &mut items[*index] {
                        entry.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }
    toml::to_string(&table).unwrap()
}

/// Per-connector variables: the fields a file has (by their variable names), list
/// entries by index (small and huge), plugin fields, and anything after the prefix.
fn override_name() -> impl Strategy<Value = String> {
    let connector = select(vec![
        "SINK_STDOUT_",
        "SOURCE_RANDOM_",
        "SINK_OTHER_",
        "SOURCE_",
    ]);
    let field = prop_oneof![
        4 => select(vec![
            "ENABLED", "NAME", "PATH", "VERSION", "VERBOSE", "BENCHMARK", "ERROR_POLICY",
            "PLUGIN_CONFIG_FORMAT", "RETRY_MAX_ATTEMPTS", "RETRY_INITIAL_BACKOFF",
            "DEAD_LETTER_STREAM", "MAX_UNSAVED_SENDS", "VERIFIED_RESUME", "KEY", "TYPE",
            "TRANSFORMS", "STREAMS", "STREAMS_", "STREAMS_0", "STREAMS__TOPICS",
        ])
        .prop_map(str::to_owned),
        3 => (
            prop_oneof![3 => (0usize..4).prop_map(|n| n.to_string()), 1 => "[0-9]{1,24}"],
            select(vec![
                "STREAM", "TOPICS", "TOPIC", "SCHEMA", "BATCH_LENGTH", "POLL_INTERVAL",
                "LINGER_TIME", "CONSUMER_GROUP", "MAX_SEND_BYTES", "AVRO_SCHEMA_JSON", "NOPE",
            ]),
        )
            .prop_map(|(index, field)| format!("STREAMS_{index}_{field}")),
        2 => "[A-Z_]{0,12}".prop_map(|field| format!("PLUGIN_CONFIG_{field}")),
        1 => "\\PC{0,12}",
    ];
    (connector, field).prop_map(|(connector, field)| format!("IGGY_CONNECTORS_{connector}{field}"))
}

/// A connector directory written from `files` (name, contents).
fn connector_dir(label: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let dir = scratch(label);
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes as a connector file, and as the provider's active versions file,
    /// beside a valid file.
    #[test]
    fn any_bytes_as_connector_files(
        file in vec(any::<u8>(), 0..2048),
        active in vec(any::<u8>(), 0..256),
    ) {
        parse_checked(String::from_utf8_lossy(&file).into_owned());
        let dir = connector_dir("connector-bytes", &[
            ("a.toml".to_owned(), file.clone()),
            ("sink.toml".to_owned(), SINK.as_bytes().to_vec()),
        ]);
        open_checked(dir, BTreeMap::new());
        let dir = connector_dir("connector-active", &[
            ("sink.toml".to_owned(), SINK.as_bytes().to_vec()),
            (ACTIVE_VERSIONS_FILE.to_owned(), active),
        ]);
        open_checked(dir, BTreeMap::new());
    }

    /// TOML-ish text as a connector file.
    #[test]
    fn toml_like_text_as_a_connector_file(lines in vec(toml_line(), 0..16)) {
        let text = format!("type = \"sink\"\n{}", lines.join("\n"));
        parse_checked(text.clone());
        open_checked(connector_dir("connector-toml-like", &[("c.toml".to_owned(), text.into_bytes())]), BTreeMap::new());
    }

    /// A valid sink or source file with known keys changed to any value or removed.
    #[test]
    fn any_values_for_known_keys_in_a_connector_file(
        source in any::<bool>(),
        changes in vec(change(), 0..8),
    ) {
        let text = changed(if source { SOURCE } else { SINK }, &changes);
        parse_checked(text.clone());
        open_checked(connector_dir("connector-values", &[("c.toml".to_owned(), text.into_bytes())]), BTreeMap::new());
    }

    /// Per-connector variables with any values over valid files.
    #[test]
    fn any_connector_overrides(vars in btree_map(override_name(), variable_value(), 0..10)) {
        let dir = connector_dir("connector-overrides", &[
            ("sink.toml".to_owned(), SINK.as_bytes().to_vec()),
            ("source.toml".to_owned(), SOURCE.as_bytes().to_vec()),
        ]);
        open_checked(dir, vars);
    }
}

// ---- regressions and inputs too large to come up by chance ---------------------------

/// Nesting a recursive parser would overflow its stack on.
#[test]
fn deeply_nested_files_are_errors() {
    let depth = 100_000;
    for text in [
        format!("a = {}{}", "[".repeat(depth), "]".repeat(depth)),
        format!("a = {}1{}", "{ b = ".repeat(depth), " }".repeat(depth)),
        format!("[{}]", "a.".repeat(depth).trim_end_matches('.')),
    ] {
        load_checked(Some(case_file("runtime-deep", text.as_bytes())), Vec::new());
        parse_checked(format!("type = \"sink\"\n{text}"));
    }
}

/// A per-connector variable naming a `[[streams]]` entry far past the file's: refused,
/// at once (it once grew the list to that index, one empty table at a time).
#[test]
fn a_huge_list_index_in_an_override_is_an_error() {
    let dir = connector_dir(
        "huge-index",
        &[("sink.toml".to_owned(), SINK.as_bytes().to_vec())],
    );
    let name = "IGGY_CONNECTORS_SINK_STDOUT_STREAMS_99999999999_TOPICS";
    let env = BTreeMap::from([(name.to_owned(), "[t]".to_owned())]);
    let result = within("LocalProvider::open", move || {
        LocalProvider::open(&dir, &env).map(|_| ())
    });
    let error = result.unwrap_err().to_string();
    assert!(error.contains(name), "{error}");
}

/// A plugin field's value of lists nested as deep as a variable can hold (128 KiB):
/// not a stack overflow (its value was read recursively, one call a level) but a
/// string, as any text the type guess cannot read (the plugin's description types it).
#[test]
fn deeply_nested_override_lists_are_strings() {
    use config_provider::ConfigProvider;
    let dir = connector_dir(
        "deep-override",
        &[("sink.toml".to_owned(), SINK.as_bytes().to_vec())],
    );
    let depth = 64 * 1024;
    let value = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let name = "IGGY_CONNECTORS_SINK_STDOUT_PLUGIN_CONFIG_DEEP";
    let env = BTreeMap::from([(name.to_owned(), value.clone())]);
    let provider = within("LocalProvider::open", move || {
        LocalProvider::open(&dir, &env)
    })
    .unwrap();
    let configs = block_on(provider.active_configs()).unwrap();
    let stdout = configs.sinks.values().next().unwrap();
    assert_eq!(stdout.plugin_config()["deep"], value.as_str());
    // Lists in lists as deep as a plugin could want are still lists.
    let dir = connector_dir(
        "nested-override",
        &[("sink.toml".to_owned(), SINK.as_bytes().to_vec())],
    );
    let env = BTreeMap::from([(name.to_owned(), "[[[1]]]".to_owned())]);
    let provider = LocalProvider::open(&dir, &env).unwrap();
    let configs = block_on(provider.active_configs()).unwrap();
    let stdout = configs.sinks.values().next().unwrap();
    assert_eq!(stdout.plugin_config()["deep"], serde_json::json!([[[1]]]));
}

/// Runs a provider's future to its end on a small runtime of its own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}
