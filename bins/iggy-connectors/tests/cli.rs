//! The binary's command line, run as a user would.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use iggy_connectors_tests::plugin_path;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .args(args)
        .env_remove("IGGY_CONNECTORS_CONFIG_PATH")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("--config PATH"));
    assert!(text(&help.stdout).contains("IGGY_CONNECTORS_CONFIG_PATH"));

    let version = run(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!(
            "iggy-connectors {} (connector ABI {})",
            env!("CARGO_PKG_VERSION"),
            connector_sdk::abi::ABI_VERSION
        )
    );
}

#[test]
fn plugins_lists_each_library_and_fails_on_a_bad_one() {
    let good = plugin_path("iggy_connector_random_source");
    let output = run(&["plugins", &good]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("random\tsource\t"), "{stdout}");

    let output = run(&["plugins", &good, "nowhere/libmissing"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).starts_with("random\tsource\t"));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("nowhere/libmissing"), "{stderr}");
    assert!(stderr.contains("tried"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named_with_its_origin() {
    let output = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .env("IGGY_CONNECTORS_CONFIG_PATH", "/nonexistent/config.toml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("/nonexistent/config.toml"), "{stderr}");
    assert!(stderr.contains("IGGY_CONNECTORS_CONFIG_PATH"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    let output = run(&["--bogus"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown option --bogus"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
}

#[test]
fn run_validates_the_config_first() {
    let dir = std::env::temp_dir().join(format!("cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[iggy]\nadress = \"x\"\n").unwrap();
    let output = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("`iggy.adress`: unknown key; did you mean `iggy.address`?"),
        "{stderr}"
    );

    // Valid, but nothing listens where Iggy should be: a clear error, quickly.
    let unreachable = dir.join("unreachable.toml");
    std::fs::write(
        &unreachable,
        "[iggy]\naddress = \"127.0.0.1:1\"\npassword = \"hunter2\"\n[http]\nenabled = false\n",
    )
    .unwrap();
    let output = run(&["--config", unreachable.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("configuration is valid"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is redacted: {stderr}"
    );
    assert!(
        stderr.contains("cannot connect to Iggy at 127.0.0.1:1"),
        "{stderr}"
    );
}

/// `transform` runs a connector's chain without Iggy: here upstream's Quickwit sink
/// config (add_fields with static and computed values, then delete_fields).
#[test]
fn transform_runs_a_connector_chain_over_sample_messages() {
    let dir = iggy_connectors_tests::upstream_connectors_dir();
    let samples = iggy_connectors_tests::temp_dir("cli-transform").join("in.jsonl");
    std::fs::write(
        &samples,
        "{\"email\":\"a@b\",\"created_at\":1,\"n\":1}\n\n{\"n\":2}\n",
    )
    .unwrap();
    let connector = dir.join("quickwit_sink.toml");
    let output = run(&[
        "transform",
        "--connector",
        connector.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, n) in lines.iter().zip([1, 2]) {
        assert_eq!(line["n"], n);
        assert_eq!(line["service_name"], "qw_connector");
        assert!(line["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(line["random_id"].as_str().unwrap().len(), 36);
        assert!(line.get("email").is_none() && line.get("created_at").is_none());
    }
    assert!(text(&output.stderr).contains("2 messages: 2 out, 0 filtered, 0 failed"));

    // A message that cannot be decoded is reported with its line; the exit code says so.
    std::fs::write(&samples, "{\"n\":1}\nnot json\n").unwrap();
    let output = run(&[
        "transform",
        "--connector",
        connector.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("line 2: cannot decode"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout).lines().count(), 1);

    // A bad transform config names the file and the key.
    let bad = samples.with_file_name("bad.toml");
    std::fs::write(
        &bad,
        "type = \"sink\"\nkey = \"k\"\nenabled = true\nversion = 0\nname = \"n\"\npath = \"p\"\n\
         [[streams]]\nstream = \"s\"\ntopics = [\"t\"]\nschema = \"json\"\n\
         [transforms.delete_fields]\nfeilds = [\"a\"]\n",
    )
    .unwrap();
    let output = run(&[
        "transform",
        "--connector",
        bad.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("transforms.delete_fields"),
        "{stderr}"
    );
}

/// A runtime config over a directory of connector files, for `validate`.
fn validate_setup(
    label: &str,
    connectors: &[(&str, String)],
    runtime_extra: &str,
) -> std::path::PathBuf {
    let dir = iggy_connectors_tests::temp_dir(label);
    let configs = dir.join("connectors");
    std::fs::create_dir_all(&configs).unwrap();
    for (name, text) in connectors {
        std::fs::write(configs.join(name), text).unwrap();
    }
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[connectors]\nconfig_dir = \"{}\"\n{runtime_extra}",
            configs.display()
        ),
    )
    .unwrap();
    config
}

fn connector(kind: &str, key: &str, path: &str, extra: &str) -> String {
    let stream = if kind == "sink" {
        "[[streams]]\nstream = \"s\"\ntopics = [\"t\"]\nschema = \"json\"\n"
    } else {
        "[[streams]]\nstream = \"s\"\ntopic = \"t\"\nschema = \"json\"\n"
    };
    format!(
        "type = \"{kind}\"\nkey = \"{key}\"\nenabled = true\nversion = 0\nname = \"n\"\npath = \"{path}\"\n{stream}{extra}"
    )
}

#[test]
fn validate_accepts_a_good_config_without_iggy() {
    let config = validate_setup(
        "validate-good",
        &[
            (
                "random.toml",
                connector(
                    "source",
                    "random",
                    &plugin_path("iggy_connector_random_source"),
                    "[transforms.add_fields]\nfields = [{ key = \"a\", value.static = 1 }]\n",
                ),
            ),
            (
                "file.toml",
                connector(
                    "sink",
                    "file",
                    &plugin_path("iggy_connector_file_sink"),
                    "[plugin_config]\npath = \"out.jsonl\"\n",
                ),
            ),
        ],
        // Nothing listens here: validate must not try to connect.
        "[iggy]\naddress = \"127.0.0.1:1\"\n",
    );
    let output = run(&["validate", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("configuration is valid") && stdout.contains("1 sources, 1 sinks"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let config = validate_setup(
        "validate-bad",
        &[
            (
                "missing.toml",
                connector("sink", "missing", "no/such/library", ""),
            ),
            (
                "wrong.toml",
                connector(
                    "source",
                    "wrong",
                    &plugin_path("iggy_connector_file_sink"),
                    "",
                ),
            ),
            (
                "bad.toml",
                connector(
                    "sink",
                    "bad",
                    &plugin_path("iggy_connector_null_sink"),
                    "[transforms.filter]\nfield = \"\"\nmatches = \"is_null\"\n",
                ),
            ),
            (
                "proto.toml",
                connector(
                    "source",
                    "proto",
                    &plugin_path("iggy_connector_random_source"),
                    "",
                )
                .replace(
                    "schema = \"json\"\n",
                    "schema = \"proto\"\nproto_descriptor_set = \"no/such.pb\"\nproto_message_type = \"demo.Event\"\n",
                ),
            ),
        ],
        "",
    );
    let output = run(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("invalid: 4 problems"), "{stderr}");
    assert!(
        stderr.contains("source proto (version 0): stream s: proto_descriptor_set no/such.pb:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sink missing (version 0): `path`:") && stderr.contains("no/such/library"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source wrong (version 0): `path`:") && stderr.contains("is a sink plugin"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sink bad (version 0): transforms.filter.field"),
        "{stderr}"
    );

    // A file that does not parse does not hide the problems of the others, and a
    // connector's plugin_config is checked against what its plugin describes (a
    // misspelt key, a wrong type), by the plugin itself too (the random source's range),
    // with nothing opened: this sink would write to a directory that does not exist.
    let config = validate_setup(
        "validate-plugin-config",
        &[
            ("broken.toml", "type = \"sink\"\nkey = [\n".to_owned()),
            (
                "stdout.toml",
                connector(
                    "sink",
                    "out",
                    &plugin_path("iggy_connector_stdout_sink"),
                    "[plugin_config]\nprint_paylod = true\n",
                ),
            ),
            (
                "file.toml",
                connector(
                    "sink",
                    "file",
                    &plugin_path("iggy_connector_file_sink"),
                    "[plugin_config]\npath = \"/no/such/dir/out.jsonl\"\nfsync = \"yes\"\n",
                ),
            ),
            (
                "random.toml",
                connector(
                    "source",
                    "random",
                    &plugin_path("iggy_connector_random_source"),
                    "[plugin_config]\nmessages_range = [9, 2]\n",
                ),
            ),
            (
                "missing.toml",
                connector("sink", "missing", "no/such/library", ""),
            ),
        ],
        "[iggy]\naddress = \"127.0.0.1:1\"\n",
    );
    let output = run(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    for expected in [
        "broken.toml",
        "sink out (version 0): plugin_config.print_paylod: unknown key; did you mean `print_payload`?",
        "sink file (version 0): plugin_config.fsync: expected boolean, got a string",
        "source random (version 0): plugin_config.messages_range: expected [min, max] with 1 <= min <= max, got [9, 2]",
        "sink missing (version 0): `path`:",
    ] {
        assert!(stderr.contains(expected), "{expected} not in {stderr}");
    }
    assert!(stderr.contains("invalid: 5 problems"), "{stderr}");

    // Runtime config problems come with the file and key.
    let config = validate_setup("validate-typo", &[], "[iggy]\nadress = \"x\"\n");
    let output = run(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("config.toml") && stderr.contains("did you mean `iggy.address`"),
        "{stderr}"
    );
}

/// `transform` shapes samples as the runtime would for an Avro stream: each JSON line is
/// encoded with the stream's schema (a line that does not fit fails with its number),
/// transformed, and shown decoded.
#[test]
fn transform_dry_runs_an_avro_stream() {
    let dir = iggy_connectors_tests::temp_dir("cli-transform-avro");
    let connector = dir.join("avro_sink.toml");
    std::fs::write(
        &connector,
        r#"type = "sink"
key = "avro"
enabled = true
version = 0
name = "Avro sink"
path = "libiggy_connector_stdout_sink"

[[streams]]
stream = "s"
topics = ["t"]
schema = "avro"
avro_schema_json = '{"type":"record","name":"R","fields":[{"name":"n","type":"long"},{"name":"tag","type":["null","string"],"default":null}]}'

[transforms.update_fields]
fields = [{ key = "tag", value = "seen" }]
"#,
    )
    .unwrap();
    let samples = dir.join("in.jsonl");
    std::fs::write(&samples, "{\"n\":1,\"tag\":null}\n{\"n\":\"not a long\"}\n").unwrap();
    let output = run(&[
        "transform",
        "--connector",
        connector.to_str().unwrap(),
        "--input",
        samples.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, [serde_json::json!({ "n": 1, "tag": "seen" })]);
    assert!(
        stderr.contains("line 2: cannot decode: as Avro"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 messages: 1 out, 0 filtered, 1 failed"),
        "{stderr}"
    );
}

/// The shipped connectors with upstream's convert transforms (every key as upstream's
/// configs have it) run end to end with `transform` from the repository root: JSON to
/// Protobuf and to Avro on a source (shown as the stream holds them, decoded), and
/// FlatBuffers to JSON on a sink, with field mappings; a message that does not convert
/// fails alone, with its line.
#[test]
fn the_shipped_convert_configs_run_as_upstream_writes_them() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cases = [
        (
            "proto_source.toml",
            "orders.jsonl",
            serde_json::json!({ "id": 1, "customer": "ada", "items": ["tea", "cake"], "paid": true }),
            "line 3: transform proto_convert failed: not a valid shop.Order: field id",
        ),
        (
            "avro_source.toml",
            "orders.jsonl",
            serde_json::json!({ "id": 1, "customer": "ada", "paid": true }),
            "line 3: transform avro_convert failed: cannot encode as Avro: id",
        ),
        (
            "flat_buffer_sink.toml",
            "readings.jsonl",
            serde_json::json!({
                "sensor_id": "t-1", "celsius": 21.5, "kind": "Water", "tags": ["roof"],
                "place": { "name": "garden", "at": { "x": 1.5, "y": 2.0 } }, "count": 7
            }),
            "line 3: cannot decode: as FlatBuffer: cannot encode as FlatBuffers: field sensor: required but missing",
        ),
    ];
    for (connector, input, first, failure) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
            .args([
                "transform",
                "--connector",
                &format!("configs/transforms/{connector}"),
                "--input",
                &format!("configs/transforms/{input}"),
            ])
            .current_dir(root)
            .env_remove("IGGY_CONNECTORS_CONFIG_PATH")
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{connector}: {stderr}");
        let lines: Vec<serde_json::Value> = text(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{connector}: {lines:?}");
        assert_eq!(lines[0], first, "{connector}");
        assert!(stderr.contains(failure), "{connector}: {stderr}");
        assert!(
            stderr.contains("3 messages: 2 out, 0 filtered, 1 failed"),
            "{connector}: {stderr}"
        );
    }
}

/// `validate` builds the convert transforms without connecting to anything: schema
/// files are read and compiled, message types and root tables looked up, and a wrong
/// one is named with its connector and key.
#[test]
fn validate_builds_the_convert_transforms() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/transforms");
    let random = plugin_path("iggy_connector_random_source");
    let proto = format!(
        "[transforms.proto_convert]\nsource_format = \"json\"\ntarget_format = \"proto\"\nschema_path = \"{shipped}/order.proto\"\nmessage_type = \"shop.Order\"\ninclude_paths = []\npreserve_unknown_fields = false\n"
    );
    let flat = format!(
        "[transforms.flat_buffer_convert]\nsource_format = \"json\"\ntarget_format = \"flat_buffer\"\nschema_path = \"{shipped}/sensor.bfbs\"\nroot_table_name = \"demo.Reading\"\ninclude_paths = []\npreserve_unknown_fields = false\n"
    );
    let avro = "[transforms.avro_convert]\nsource_format = \"json\"\ntarget_format = \"avro\"\nschema_json = '{\"type\":\"record\",\"name\":\"R\",\"fields\":[]}'\n";
    let good = validate_setup(
        "validate-convert",
        &[
            ("proto.toml", connector("source", "proto", &random, &proto)),
            ("flat.toml", connector("source", "flat", &random, &flat)),
            ("avro.toml", connector("source", "avro", &random, avro)),
        ],
        "[iggy]\naddress = \"127.0.0.1:1\"\n",
    );
    let output = run(&["validate", "--config", good.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let bad = validate_setup(
        "validate-convert-bad",
        &[
            (
                "proto.toml",
                connector(
                    "source",
                    "proto",
                    &random,
                    &proto.replace("shop.Order", "shop.Ordr"),
                ),
            ),
            (
                "flat.toml",
                connector(
                    "source",
                    "flat",
                    &random,
                    &flat.replace("demo.Reading", "demo.Nope"),
                ),
            ),
        ],
        "",
    );
    let output = run(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("source proto (version 0): transforms.proto_convert.schema_path")
            && stderr.contains("no message type \"shop.Ordr\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("source flat (version 0): transforms.flat_buffer_convert.schema_path")
            && stderr.contains("no table \"demo.Nope\""),
        "{stderr}"
    );
}

/// The README's `transform` example, run exactly as written from the repository root:
/// its connector and sample input ship with the repository, and the chain filters,
/// deletes, adds and updates as the example's comments say.
#[test]
fn the_readmes_transform_example_runs_as_written() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let command = readme
        .lines()
        .find(|line| line.starts_with("iggy-connectors transform --connector configs/"))
        .expect("the README shows a transform command on the shipped configs");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
        .args(&args)
        .current_dir(root)
        .env_remove("IGGY_CONNECTORS_CONFIG_PATH")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let orders: Vec<u64> = lines
        .iter()
        .map(|line| line["order"].as_u64().unwrap())
        .collect();
    assert_eq!(orders, [1, 3], "the debug event is filtered out");
    for line in &lines {
        assert!(line.get("password").is_none(), "{line}");
        assert_eq!(line["service"], "checkout", "{line}");
        assert!(
            line["seen_at"].as_u64().unwrap() > 1_700_000_000_000,
            "{line}"
        );
    }
    assert_eq!(lines[0]["status"], "seen", "an existing status is updated");
    assert!(lines[1].get("status").is_none(), "no status is added");
    let summary = text(&output.stderr);
    assert!(
        summary.contains("3 messages: 2 out, 1 filtered, 0 failed"),
        "{summary}"
    );
    let flowing = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flowing.contains(summary.trim()),
        "the README quotes the summary: {summary}"
    );
}

/// A relative `config_dir` is read from the working directory (as upstream reads it):
/// `validate` says which directory it read, and warns when that directory is missing
/// or holds no connector files, instead of a bare "valid, 0 sources, 0 sinks".
#[test]
fn validate_names_the_connector_directory_it_read() {
    let home = iggy_connectors_tests::temp_dir("validate-dir");
    let elsewhere = home.join("elsewhere");
    std::fs::create_dir_all(home.join("connectors")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(
        home.join("connectors/file.toml"),
        connector(
            "sink",
            "file",
            &plugin_path("iggy_connector_file_sink"),
            "[plugin_config]\npath = \"out.jsonl\"\n",
        ),
    )
    .unwrap();
    let config = home.join("config.toml");
    std::fs::write(&config, "[connectors]\nconfig_dir = \"connectors\"\n").unwrap();
    let validate_from = |dir: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"))
            .args(["validate", "--config", config.to_str().unwrap()])
            .current_dir(dir)
            .env_remove("IGGY_CONNECTORS_CONFIG_PATH")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    let canonical = |path: std::path::PathBuf| path.canonicalize().unwrap();

    let stdout = validate_from(&home);
    let read = canonical(home.join("connectors"));
    assert!(
        stdout.contains("0 sources, 1 sinks")
            && stdout.contains(&format!("connector configs read from {}", read.display())),
        "{stdout}"
    );

    let stdout = validate_from(&elsewhere);
    let missing = canonical(elsewhere.clone()).join("connectors");
    assert!(
        stdout.contains(&format!(
            "warning: the connector config directory {} does not exist",
            missing.display()
        )) && stdout.contains("read from the working directory"),
        "{stdout}"
    );

    std::fs::create_dir_all(elsewhere.join("connectors")).unwrap();
    let stdout = validate_from(&elsewhere);
    assert!(
        stdout.contains("holds no connector files (*.toml)"),
        "{stdout}"
    );
}

/// Off a terminal the logs carry no colour codes, and the `iggy` client's connection
/// chatter (one info line per connection attempt) is left out: our own info lines stay.
/// With `RUST_LOG` set, it alone decides.
#[test]
fn logs_are_plain_off_a_terminal_and_leave_out_the_clients_chatter() {
    let config = iggy_connectors_tests::temp_dir("cli-logging").join("unreachable.toml");
    std::fs::write(
        &config,
        "[iggy]\naddress = \"127.0.0.1:1\"\n[http]\nenabled = false\n",
    )
    .unwrap();
    let logs = |rust_log: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iggy-connectors"));
        command
            .args(["--config", config.to_str().unwrap()])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        std::thread::spawn(move || command.output().unwrap())
    };
    let (default, asked) = (logs(None), logs(Some("info")));
    for (output, client_at_info) in [(default, false), (asked, true)] {
        let output = output.join().unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = text(&output.stderr);
        assert!(!stderr.contains('\x1b'), "colour codes in a pipe: {stderr}");
        assert!(
            stderr.contains(" INFO iggy_connectors: configuration is valid"),
            "{stderr}"
        );
        assert_eq!(
            stderr.contains(" INFO iggy::"),
            client_at_info,
            "the iggy client's info lines: {stderr}"
        );
    }
}

/// `connectors` lists the bundled connectors and the configured ones with the plugin
/// each loads; `connectors describe` prints a connector's plugin_config reference from
/// its own description, for a bundled name, a configured key, or a library path.
#[test]
fn connectors_are_listed_and_described() {
    let config = validate_setup(
        "connectors-list",
        &[(
            "file.toml",
            connector(
                "sink",
                "archive",
                &plugin_path("iggy_connector_file_sink"),
                "[plugin_config]\npath = \"out.jsonl\"\n",
            ),
        )],
        "[iggy]\naddress = \"127.0.0.1:1\"\n",
    );
    let listed = run(&["connectors", "--config", config.to_str().unwrap()]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let stdout = text(&listed.stdout);
    for expected in [
        "  stdout\tsink",
        "  file\tsink",
        "  null\tsink",
        "  random\tsource",
    ] {
        assert!(stdout.contains(expected), "{expected} not in {stdout}");
    }
    assert!(
        stdout.contains("sink archive") && stdout.contains("file sink"),
        "{stdout}"
    );

    let described = run(&["connectors", "describe", "random"]);
    assert!(described.status.success(), "{}", text(&described.stderr));
    let reference = text(&described.stdout);
    assert!(reference.starts_with("# `random` source"), "{reference}");
    assert!(
        reference.contains("| `messages_range` | [integer; 2] | `[1,10]` |")
            && reference.contains("| `interval` | string | `\"1s\"` |"),
        "{reference}"
    );
    for name in ["archive", &plugin_path("iggy_connector_file_sink")] {
        let described = run(&[
            "connectors",
            "--config",
            config.to_str().unwrap(),
            "describe",
            name,
        ]);
        assert!(described.status.success(), "{}", text(&described.stderr));
        assert!(
            text(&described.stdout).contains("| `path` | string | required |"),
            "{name}: {}",
            text(&described.stdout)
        );
    }
    let unknown = run(&["connectors", "describe", "nope"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("\"nope\" is no bundled connector"));
}

/// A config may name a bundled connector by its name (`path = "stdout"`), as the
/// demo's do: `validate` and `connectors` take it as `run` does.
#[test]
fn bundled_connectors_are_named_by_their_names() {
    let config = validate_setup(
        "validate-bundled-names",
        &[
            ("out.toml", connector("sink", "out", "stdout", "")),
            (
                "random.toml",
                connector(
                    "source",
                    "gen",
                    "random",
                    "[plugin_config]\ninterval = \"1s\"\n",
                ),
            ),
        ],
        "[iggy]\naddress = \"127.0.0.1:1\"\n",
    );
    let output = run(&["validate", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = run(&["connectors", "--config", config.to_str().unwrap()]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("sink out\tstdout\tstdout sink"),
        "{}",
        text(&listed.stdout)
    );
    let described = run(&[
        "connectors",
        "--config",
        config.to_str().unwrap(),
        "describe",
        "gen",
    ]);
    assert!(described.status.success(), "{}", text(&described.stderr));
    assert!(text(&described.stdout).starts_with("# `random` source"));
}
