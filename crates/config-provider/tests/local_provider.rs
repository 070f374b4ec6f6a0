//! Connector config files and the local provider: upstream files, environment
//! overrides, versions, the active version across restarts, and bad input.

// In tests an unwrap is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config_provider::{
    ACTIVE_VERSIONS_FILE, ConfigProvider, ConnectorConfig, LocalProvider, ProviderError,
    parse_connector_toml,
};
use connector_sdk::{ConnectorKind, Schema};

// A copy of `iggy_connectors_tests::temp_dir`: that crate depends on this one (a cycle),
// and would bring every plugin and the Iggy client into this crate's test build.
fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "local-provider-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

const SINK: &str = r#"
type = "sink"
key = "stdout"
enabled = true
version = 0
name = "Stdout sink"
path = "target/release/libiggy_connector_stdout_sink"

[[streams]]
stream = "s"
topics = ["t"]
schema = "json"

[plugin_config]
print_payload = true
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[path = "../../../tests/support/fixtures.rs"]
mod fixtures;

#[tokio::test]
async fn upstream_connector_configs_load_unchanged() {
    let fixtures = fixtures::upstream_connectors_dir();
    let mut loaded = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let config = parse_connector_toml(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(!config.common().key.is_empty());
        loaded += 1;
    }
    // Every file loads (each failure panics above, naming it); the fixtures grow as
    // connectors are added, so their number is not fixed here.
    assert!(loaded > 0, "no fixtures in {}", fixtures.display());

    // Read through the provider too: two versions of `random`, the highest active.
    let dir = temp_dir("upstream");
    for name in [
        "random_source_v0.toml",
        "random_source_v1.toml",
        "quickwit_sink.toml",
    ] {
        std::fs::copy(fixtures.join(name), dir.join(name)).unwrap();
    }
    let provider = LocalProvider::open(&dir, &no_env()).unwrap();
    let versions = provider
        .versions(ConnectorKind::Source, "random")
        .await
        .unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|config| config.common().version)
            .collect::<Vec<_>>(),
        [0, 1]
    );
    let active = provider.active_configs().await.unwrap();
    assert_eq!(active.sources["random"].common().version, 1);
    let ConnectorConfig::Sink(quickwit) = &active.sinks["quickwit"] else {
        panic!("quickwit is a sink");
    };
    let order: Vec<&str> = quickwit
        .common
        .transforms
        .0
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(order, ["add_fields", "delete_fields"], "the file's order");
}

#[tokio::test]
async fn environment_overrides_apply_per_connector() {
    let dir = temp_dir("env");
    write(&dir, "stdout.toml", SINK);
    let env: BTreeMap<String, String> = [
        ("IGGY_CONNECTORS_SINK_STDOUT_ENABLED", "false"),
        ("IGGY_CONNECTORS_SINK_STDOUT_NAME", "Renamed"),
        ("IGGY_CONNECTORS_SINK_STDOUT_STREAMS_0_TOPICS", "[a, b]"),
        ("IGGY_CONNECTORS_SINK_STDOUT_STREAMS_0_BATCH_LENGTH", "50"),
        (
            "IGGY_CONNECTORS_SINK_STDOUT_PLUGIN_CONFIG_PRINT_PAYLOAD",
            "false",
        ),
        ("IGGY_CONNECTORS_SINK_STDOUT_PLUGIN_CONFIG_EXTRA", "42"),
        ("IGGY_CONNECTORS_SINK_OTHER_ENABLED", "false"),
        ("IGGY_CONNECTORS_SOURCE_STDOUT_ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let provider = LocalProvider::open(&dir, &env).unwrap();
    let ConnectorConfig::Sink(sink) = provider
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap()
    else {
        panic!("sink expected");
    };
    assert!(!sink.common.enabled);
    assert_eq!(sink.common.name, "Renamed");
    assert_eq!(sink.streams[0].topics, ["a", "b"]);
    assert_eq!(sink.streams[0].batch_length, 50);
    assert_eq!(sink.streams[0].payload.schema, Schema::Json);
    assert_eq!(
        sink.common.plugin_config.unwrap(),
        serde_json::json!({ "print_payload": false, "extra": 42 })
    );

    let bad: BTreeMap<String, String> = [(
        "IGGY_CONNECTORS_SINK_STDOUT_ENABLD".to_owned(),
        "false".to_owned(),
    )]
    .into();
    let error = LocalProvider::open(&dir, &bad).unwrap_err().to_string();
    assert!(
        error.contains("IGGY_CONNECTORS_SINK_STDOUT_ENABLD"),
        "{error}"
    );
    assert!(
        error.contains("did you mean IGGY_CONNECTORS_SINK_STDOUT_ENABLED"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_files_are_reported_together_with_file_and_key() {
    let dir = temp_dir("bad");
    let typo = write(
        &dir,
        "typo.toml",
        &SINK.replace("topics = [\"t\"]", "topicz = [\"t\"]"),
    );
    let bad_key = write(
        &dir,
        "bad-key.toml",
        &SINK.replace("key = \"stdout\"", "key = \"../etc\""),
    );
    let wrong_type = write(
        &dir,
        "wrong-type.toml",
        &SINK.replace("key = \"stdout\"", "key = \"other\"").replace(
            "schema = \"json\"",
            "schema = \"json\"\nbatch_length = \"many\"",
        ),
    );
    write(&dir, ".hidden.toml", "not toml at all [[[");
    write(&dir, "notes.txt", "ignored");
    let error = LocalProvider::open(&dir, &no_env())
        .unwrap_err()
        .to_string();
    assert!(error.contains("3 problems"), "{error}");
    assert!(error.contains(&typo.display().to_string()), "{error}");
    assert!(
        error.contains("`streams[0].topicz`: unknown field `topicz`"),
        "{error}"
    );
    assert!(error.contains("did you mean `topics`?"), "{error}");
    assert!(error.contains(&bad_key.display().to_string()), "{error}");
    assert!(error.contains("\"../etc\" contains '.'"), "{error}");
    assert!(error.contains(&wrong_type.display().to_string()), "{error}");
    assert!(
        !error.contains("in `streams"),
        "one line per problem: {error}"
    );
    assert!(
        error.contains("`streams[0].batch_length`: invalid type: string \"many\", expected u32"),
        "{error}"
    );
}

#[tokio::test]
async fn duplicate_versions_and_missing_active_versions_are_errors() {
    let dir = temp_dir("dup");
    write(&dir, "a.toml", SINK);
    write(&dir, "b.toml", SINK);
    let error = LocalProvider::open(&dir, &no_env())
        .unwrap_err()
        .to_string();
    assert!(error.contains("version 0 is also defined in"), "{error}");

    let dir = temp_dir("missing-active");
    write(&dir, "a.toml", SINK);
    write(&dir, ACTIVE_VERSIONS_FILE, "[sinks]\nstdout = 4\n");
    let error = LocalProvider::open(&dir, &no_env())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("version 4 is active, but no readable file defines it"),
        "{error}"
    );
}

#[tokio::test]
async fn versions_are_created_activated_and_kept_across_restarts() {
    let dir = temp_dir("versions");
    write(&dir, "stdout.toml", SINK);
    let provider = LocalProvider::open(&dir, &no_env()).unwrap();
    let mut next = provider
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    if let ConnectorConfig::Sink(sink) = &mut next {
        sink.common.name = "Second".to_owned();
    }
    let created = provider
        .create(ConnectorKind::Sink, "stdout", next.clone())
        .await
        .unwrap();
    assert_eq!(created.common().version, 1);
    assert!(dir.join("sink_stdout_1.toml").is_file());
    // Creating does not activate: the active version is still the recorded default...
    // which, with no record, is the highest one.
    assert_eq!(
        provider
            .active(ConnectorKind::Sink, "stdout")
            .await
            .unwrap()
            .common()
            .version,
        1
    );
    let third = provider
        .create(ConnectorKind::Sink, "stdout", next)
        .await
        .unwrap();
    assert_eq!(third.common().version, 2);
    provider
        .set_active(ConnectorKind::Sink, "stdout", 1)
        .await
        .unwrap();
    assert_eq!(
        provider
            .active(ConnectorKind::Sink, "stdout")
            .await
            .unwrap()
            .common()
            .version,
        1
    );

    // A restart honours the recorded active version, not the newest (upstream #3848).
    drop(provider);
    let reopened = LocalProvider::open(&dir, &no_env()).unwrap();
    let active = reopened.active_configs().await.unwrap();
    assert_eq!(active.sinks["stdout"].common().version, 1);
    let ConnectorConfig::Sink(sink) = &active.sinks["stdout"] else {
        panic!("sink expected");
    };
    assert_eq!(sink.common.name, "Second");

    // Deleting the active version makes the highest remaining one active.
    reopened
        .delete(ConnectorKind::Sink, "stdout", None)
        .await
        .unwrap();
    assert!(!dir.join("sink_stdout_1.toml").exists());
    assert_eq!(
        reopened
            .active(ConnectorKind::Sink, "stdout")
            .await
            .unwrap()
            .common()
            .version,
        2
    );
    let versions = reopened
        .versions(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|config| config.common().version)
            .collect::<Vec<_>>(),
        [0, 2]
    );

    let missing = reopened
        .set_active(ConnectorKind::Sink, "stdout", 9)
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            ProviderError::NotFound {
                version: Some(9),
                ..
            }
        ),
        "{missing}"
    );
    let unknown = reopened
        .active(ConnectorKind::Source, "stdout")
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ProviderError::NotFound { .. }),
        "{unknown}"
    );
    let bad = reopened
        .versions(ConnectorKind::Sink, "../x")
        .await
        .unwrap_err();
    assert!(matches!(bad, ProviderError::Invalid(_)), "{bad}");
    let created = reopened
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    let wrong_kind = reopened
        .create(ConnectorKind::Source, "stdout", created)
        .await
        .unwrap_err();
    assert!(
        matches!(wrong_kind, ProviderError::Invalid(_)),
        "{wrong_kind}"
    );
}

#[tokio::test]
async fn an_empty_or_missing_directory_means_no_connectors() {
    let empty = temp_dir("empty");
    let provider = LocalProvider::open(&empty, &no_env()).unwrap();
    assert!(provider.active_configs().await.unwrap().sinks.is_empty());
    let missing = empty.join("does-not-exist");
    let provider = LocalProvider::open(&missing, &no_env()).unwrap();
    let active = provider.active_configs().await.unwrap();
    assert!(active.sinks.is_empty() && active.sources.is_empty());
}

#[tokio::test]
async fn secrets_in_connector_files_resolve_and_are_redacted() {
    // A variable cargo sets for every test process stands for the secret.
    let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let dir = temp_dir("secrets");
    write(
        &dir,
        "pg.toml",
        &SINK.replace(
            "print_payload = true",
            "connection_string = \"${env:CARGO_MANIFEST_DIR}\"",
        ),
    );
    let provider = LocalProvider::open(&dir, &no_env()).unwrap();
    let config = provider
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    assert_eq!(config.plugin_config()["connection_string"], secret.as_str());
    assert!(
        config
            .common()
            .secrets
            .contains("plugin_config.connection_string")
    );
    let redacted = config.redacted().to_string();
    assert!(!redacted.contains(&secret), "{redacted}");
    assert!(redacted.contains(config_provider::REDACTED), "{redacted}");

    // A new version, as the API hands it over (references unresolved), keeps the
    // reference on disk and the secret in memory only.
    let unresolved: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": "stdout", "enabled": true, "version": 0, "name": "n", "path": "p",
        "streams": [{ "stream": "s", "topics": ["t"], "schema": "json" }],
        "plugin_config": { "connection_string": "${env:CARGO_MANIFEST_DIR}" }
    }))
    .unwrap();
    let created = provider
        .create(ConnectorKind::Sink, "stdout", unresolved)
        .await
        .unwrap();
    assert_eq!(
        created.plugin_config()["connection_string"],
        secret.as_str()
    );
    let on_disk = std::fs::read_to_string(dir.join("sink_stdout_1.toml")).unwrap();
    assert!(on_disk.contains("${env:CARGO_MANIFEST_DIR}"), "{on_disk}");
    assert!(!on_disk.contains(&secret), "{on_disk}");

    write(
        &dir,
        "broken.toml",
        &SINK.replace("key = \"stdout\"", "key = \"other\"").replace(
            "print_payload = true",
            "dsn = \"${env:LOCAL_PROVIDER_TEST_UNSET}\"",
        ),
    );
    let error = LocalProvider::open(&dir, &no_env())
        .unwrap_err()
        .to_string();
    assert!(error.contains("`plugin_config.dsn`"), "{error}");
    assert!(error.contains("LOCAL_PROVIDER_TEST_UNSET"), "{error}");
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn unmatched(provider: &LocalProvider) -> Vec<String> {
    provider
        .unmatched_overrides()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test]
async fn overrides_that_match_no_connector_are_reported_with_the_keys_that_exist() {
    let dir = temp_dir("unmatched");
    write(&dir, "stdout.toml", SINK);
    write(
        &dir,
        "other.toml",
        &SINK.replace("key = \"stdout\"", "key = \"other-sink\""),
    );
    let env = vars(&[
        ("IGGY_CONNECTORS_SINK_NOSUCH_ENABLED", "false"),
        ("IGGY_CONNECTORS_SINK_STDUOT_STREAMS_0_TOPICS", "[a]"),
        ("IGGY_CONNECTORS_SOURCE_STDOUT_ENABLED", "false"),
        ("IGGY_CONNECTORS_SINK_STDOUT_NAME", "applied"),
        ("IGGY_CONNECTORS_SINK_OTHER_SINK_ENABLED", "false"),
        ("IGGY_CONNECTORS_IGGY_ADDRESS", "not an override"),
    ]);
    let provider = LocalProvider::open(&dir, &env).unwrap();
    let sinks = format!(
        "the sinks in {} are: other-sink (IGGY_CONNECTORS_SINK_OTHER_SINK_*), stdout (IGGY_CONNECTORS_SINK_STDOUT_*)",
        dir.display()
    );
    assert_eq!(
        unmatched(&provider),
        [
            format!(
                "IGGY_CONNECTORS_SINK_NOSUCH_ENABLED: matches no sink, so it is ignored: {sinks}"
            ),
            format!(
                "IGGY_CONNECTORS_SINK_STDUOT_STREAMS_0_TOPICS: matches no sink, so it is ignored: {sinks}; did you mean IGGY_CONNECTORS_SINK_STDOUT_STREAMS_0_TOPICS?"
            ),
            format!(
                "IGGY_CONNECTORS_SOURCE_STDOUT_ENABLED: matches no source, so it is ignored: there are no sources in {}",
                dir.display()
            ),
        ]
    );
    // The matched ones still apply, each to its own connector.
    let active = provider.active_configs().await.unwrap();
    assert_eq!(active.sinks["stdout"].common().name, "applied");
    let ConnectorConfig::Sink(other) = &active.sinks["other-sink"] else {
        panic!("a sink");
    };
    assert!(!other.common.enabled);

    // Nothing unmatched, nothing reported; and a missing directory matches nothing.
    let provider =
        LocalProvider::open(&dir, &vars(&[("IGGY_CONNECTORS_SINK_STDOUT_NAME", "x")])).unwrap();
    assert!(unmatched(&provider).is_empty());
    let missing = dir.join("missing");
    let provider = LocalProvider::open(
        &missing,
        &vars(&[("IGGY_CONNECTORS_SINK_STDOUT_NAME", "x")]),
    )
    .unwrap();
    assert_eq!(
        unmatched(&provider),
        [format!(
            "IGGY_CONNECTORS_SINK_STDOUT_NAME: matches no sink, so it is ignored: there are no sinks in {}",
            missing.display()
        )]
    );
}

#[tokio::test]
async fn an_override_goes_to_the_connector_with_the_longest_matching_key() {
    // `a` and `a_b`: `..._SINK_A_B_ENABLED` is `a_b`'s, not `a` with a field `B_ENABLED`
    // (which used to fail the whole directory as an unknown field of `a`).
    let dir = temp_dir("longest");
    write(
        &dir,
        "a.toml",
        &SINK.replace("key = \"stdout\"", "key = \"a\""),
    );
    write(
        &dir,
        "a_b.toml",
        &SINK.replace("key = \"stdout\"", "key = \"a_b\""),
    );
    let env = vars(&[
        ("IGGY_CONNECTORS_SINK_A_B_ENABLED", "false"),
        ("IGGY_CONNECTORS_SINK_A_NAME", "just a"),
    ]);
    let provider = LocalProvider::open(&dir, &env).unwrap();
    assert!(unmatched(&provider).is_empty());
    let active = provider.active_configs().await.unwrap();
    let (ConnectorConfig::Sink(a), ConnectorConfig::Sink(a_b)) =
        (&active.sinks["a"], &active.sinks["a_b"])
    else {
        panic!("sinks");
    };
    assert!(a.common.enabled);
    assert_eq!(a.common.name, "just a");
    assert!(!a_b.common.enabled);
    assert_eq!(a_b.common.name, "Stdout sink");
}

/// The permission bits of the file at `path`.
#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn files_the_provider_writes_have_mode_0600() {
    let dir = temp_dir("modes");
    write(&dir, "stdout.toml", SINK);
    // An active-versions file written by hand, readable by all, is replaced by a
    // private one on the next write.
    let active_file = write(&dir, ACTIVE_VERSIONS_FILE, "[sinks]\nstdout = 0\n");
    set_mode(&active_file, 0o644);
    let provider = LocalProvider::open(&dir, &no_env()).unwrap();
    let next = provider
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    let created = provider
        .create(ConnectorKind::Sink, "stdout", next)
        .await
        .unwrap();
    let file = dir.join(format!("sink_stdout_{}.toml", created.common().version));
    assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    provider
        .set_active(ConnectorKind::Sink, "stdout", created.common().version)
        .await
        .unwrap();
    assert_eq!(mode_of(&active_file), 0o600);
    // Nothing but the configs and the active versions is left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [ACTIVE_VERSIONS_FILE, "sink_stdout_1.toml", "stdout.toml"]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn secret_files_others_can_read_are_refused_when_the_provider_requires_private_files() {
    use config_provider::SecretsConfig;
    let required = SecretsConfig {
        require_private_files: true,
    };
    let dir = temp_dir("private-secrets");
    // Not a `.toml`: the provider does not read it as a config.
    let secret = write(&dir, "pg-password", "hunter2\n");
    set_mode(&secret, 0o644);
    let reference = format!("${{file:{}}}", secret.display());
    let config = write(
        &dir,
        "pg.toml",
        &SINK.replace(
            "print_payload = true",
            &format!("password = \"{reference}\""),
        ),
    );
    let shown = secret.display().to_string();

    let error = LocalProvider::open_with_secrets(&dir, &no_env(), &required)
        .unwrap_err()
        .to_string();
    assert!(error.contains(&config.display().to_string()), "{error}");
    assert!(error.contains("`plugin_config.password`"), "{error}");
    assert!(
        error.contains(&format!("secret file {shown} has mode 0644")),
        "{error}"
    );
    assert!(error.contains(&format!("chmod 600 {shown}")), "{error}");

    // Without the flag it opens, with a warning naming the config file, key and file.
    let provider = LocalProvider::open(&dir, &no_env()).unwrap();
    let warnings: Vec<String> = provider
        .secret_file_warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    let [warning] = warnings.as_slice() else {
        panic!("one warning expected: {warnings:?}");
    };
    assert!(
        warning.starts_with(&format!("{}: `plugin_config.password`: ", config.display())),
        "{warning}"
    );
    assert!(warning.contains(&format!("chmod 600 {shown}")), "{warning}");

    // Private, it opens with the flag and no warning; a version created through the
    // provider that names a file others can read is refused, and nothing is written.
    set_mode(&secret, 0o600);
    let provider = LocalProvider::open_with_secrets(&dir, &no_env(), &required).unwrap();
    assert!(provider.secret_file_warnings().is_empty());
    let config = provider
        .active(ConnectorKind::Sink, "stdout")
        .await
        .unwrap();
    assert_eq!(config.plugin_config()["password"], "hunter2");
    let open = write(&dir, "open-password", "hunter3\n");
    set_mode(&open, 0o604);
    let unresolved: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "sink", "key": "stdout", "enabled": true, "version": 0, "name": "n", "path": "p",
        "streams": [{ "stream": "s", "topics": ["t"], "schema": "json" }],
        "plugin_config": { "password": format!("${{file:{}}}", open.display()) }
    }))
    .unwrap();
    let refused = provider
        .create(ConnectorKind::Sink, "stdout", unresolved)
        .await
        .unwrap_err();
    let ProviderError::Invalid(message) = &refused else {
        panic!("invalid expected: {refused}");
    };
    assert!(message.contains("`plugin_config.password`"), "{message}");
    assert!(
        message.contains(&format!("{} has mode 0604", open.display())),
        "{message}"
    );
    assert!(!dir.join("sink_stdout_1.toml").exists());
}

/// A file that cannot be read makes its connector broken when it is, or may be, the
/// version that would run; an older broken version leaves the newest readable one
/// running; an active version no readable file defines is broken too; a file with no
/// readable kind is listed by its file name; a new version goes above the broken one.
#[tokio::test]
async fn a_broken_file_breaks_only_the_connector_it_would_run() {
    let broken_v1 = SINK.replace("version = 0", "version = 1").replace(
        "schema = \"json\"",
        "schema = \"json\"\npoll_interval = \"soon\"",
    );
    assert_ne!(broken_v1, SINK, "the fixture changed");
    let broken_keys =
        |active: &config_provider::ActiveConfigs| -> Vec<(Option<ConnectorKind>, String)> {
            active
                .broken
                .iter()
                .map(|broken| (broken.kind, broken.key.clone()))
                .collect()
        };

    // The broken file is the newest version: the connector is broken, not run.
    let dir = temp_dir("broken-newest");
    write(&dir, "v0.toml", SINK);
    write(&dir, "v1.toml", &broken_v1);
    let (provider, problems) =
        LocalProvider::open_leniently(&dir, &no_env(), &Default::default()).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let active = provider.active_configs().await.unwrap();
    assert!(active.sinks.is_empty(), "{active:?}");
    assert_eq!(
        broken_keys(&active),
        [(Some(ConnectorKind::Sink), "stdout".to_owned())]
    );
    let broken = &active.broken[0];
    assert_eq!(broken.version, Some(1));
    assert!(
        broken.problem.to_string().contains("v1.toml")
            && broken.problem.to_string().contains("poll_interval"),
        "{}",
        broken.problem
    );
    let placeholder = broken.placeholder().unwrap();
    assert_eq!(
        (placeholder.kind(), placeholder.common().key.as_str()),
        (ConnectorKind::Sink, "stdout")
    );
    // A new version goes above the broken file's; activated, it runs.
    let created = provider
        .create(
            ConnectorKind::Sink,
            "stdout",
            parse_connector_toml(SINK).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.common().version, 2);
    provider
        .set_active(ConnectorKind::Sink, "stdout", 2)
        .await
        .unwrap();
    let active = provider.active_configs().await.unwrap();
    assert_eq!(active.sinks["stdout"].common().version, 2);
    assert!(active.broken.is_empty(), "{:?}", active.broken);

    // Active version 0 named explicitly: the broken version 1 is only its file's problem.
    let dir = temp_dir("broken-not-active");
    write(&dir, "v0.toml", SINK);
    write(&dir, "v1.toml", &broken_v1);
    write(&dir, ACTIVE_VERSIONS_FILE, "[sinks]\nstdout = 0\n");
    let (provider, _) =
        LocalProvider::open_leniently(&dir, &no_env(), &Default::default()).unwrap();
    let active = provider.active_configs().await.unwrap();
    assert_eq!(active.sinks["stdout"].common().version, 0);
    assert!(active.broken.is_empty(), "{:?}", active.broken);

    // An active version that no readable file defines; and a file with no kind.
    let dir = temp_dir("broken-missing-active");
    write(&dir, "v0.toml", SINK);
    write(&dir, ACTIVE_VERSIONS_FILE, "[sinks]\nstdout = 7\n");
    write(&dir, "garbage.toml", "key = [1\n");
    let (provider, problems) =
        LocalProvider::open_leniently(&dir, &no_env(), &Default::default()).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    let active = provider.active_configs().await.unwrap();
    assert!(active.sinks.is_empty(), "{active:?}");
    let mut keys = broken_keys(&active);
    keys.sort();
    assert_eq!(
        keys,
        [
            (None, "garbage.toml".to_owned()),
            (Some(ConnectorKind::Sink), "stdout".to_owned())
        ]
    );
    assert!(
        active
            .broken
            .iter()
            .any(|broken| broken.placeholder().is_none())
    );

    // Two files of one version: which is meant cannot be told, so neither runs.
    let dir = temp_dir("broken-duplicate");
    write(&dir, "a.toml", SINK);
    write(
        &dir,
        "b.toml",
        &SINK.replace("print_payload = true", "print_payload = false"),
    );
    let (provider, _) =
        LocalProvider::open_leniently(&dir, &no_env(), &Default::default()).unwrap();
    let active = provider.active_configs().await.unwrap();
    assert!(active.sinks.is_empty(), "{active:?}");
    assert_eq!(
        broken_keys(&active),
        [(Some(ConnectorKind::Sink), "stdout".to_owned())]
    );

    // An active-versions file that cannot be read leaves no active version known: the
    // directory is refused, even leniently, rather than run drafts and overwrite it.
    let dir = temp_dir("broken-active-file");
    write(&dir, "a.toml", SINK);
    write(&dir, ACTIVE_VERSIONS_FILE, "[sinks\n");
    let error =
        LocalProvider::open_leniently(&dir, &no_env(), &Default::default()).expect_err("refused");
    assert!(error.to_string().contains(ACTIVE_VERSIONS_FILE), "{error}");
}
