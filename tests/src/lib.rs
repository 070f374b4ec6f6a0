//! Helpers shared by the end-to-end tests: where the plugin libraries are, batches to
//! feed sinks, temporary directories, the runtime's logs, and topics made ahead on
//! real-server builds that need it. The server under test ([`target`]), unique names
//! ([`unique`]) and waiting on a condition ([`eventually`]) come from `iggy-test-server`
//! (whose own tests use them, and which this crate depends on), re-exported here.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use connector_sdk::{OwnedHeader, Schema};
use plugin_host::{BatchSource, MessageMeta, SinkBatch, SinkBatchBuilder};

pub use iggy_test_server::{WAIT_LIMIT, eventually, eventually_showing, target, unique};

pub mod postgres_cluster;
pub mod services;

// Linked so that cargo builds every plugin library before the tests run: the test
// plugins, and the bundled connectors through their list.
use bundled_connectors as _;
use faulty_sink_plugin as _;
use faulty_source_plugin as _;
use no_descriptor_plugin as _;
use wrong_abi_plugin as _;

/// The path of the shared library cargo built for `crate_name` (e.g.
/// `iggy_connector_stdout_sink`), next to the running test binary.
///
/// # Panics
/// If the library is not there, with a message saying how to build it.
pub fn plugin_library(crate_name: &str) -> PathBuf {
    let file = format!(
        "{}{crate_name}.{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION
    );
    let exe = std::env::current_exe().expect("the test binary has a path");
    // Test binaries live in target/<profile>/deps; libraries built as dependencies land
    // there too, and workspace members are also copied one level up.
    let deps = exe.parent().expect("the test binary is in a directory");
    let candidates = [deps.join(&file), deps.join("..").join(&file)];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {candidates:?}; `cargo test --workspace` builds it \
                 (the tests crate depends on every plugin crate, the bundled ones through \
                 bundled-connectors)"
            )
        })
}

/// [`plugin_library`] as the `&str` path a connector config would hold.
pub fn plugin_path(crate_name: &str) -> String {
    plugin_library(crate_name).display().to_string()
}

/// A batch of `count` JSON messages with offsets from `first_offset`, each with a
/// `trace` header, for stream `stream`, topic `topic`, partition 1.
pub fn json_batch(first_offset: u64, count: u64) -> Arc<SinkBatch> {
    let source = BatchSource {
        stream: "stream".to_owned(),
        topic: "topic".to_owned(),
        partition_id: 1,
        schema: Schema::Json,
        current_offset: first_offset + count,
    };
    let mut builder = SinkBatchBuilder::with_capacity(source, count as usize);
    for offset in first_offset..first_offset + count {
        let meta = MessageMeta {
            id: 1_000 + u128::from(offset),
            offset,
            timestamp: 1_700_000_000_000_000 + offset,
            origin_timestamp: 1_600_000_000_000_000 + offset,
            checksum: offset * 7,
        };
        let headers = vec![OwnedHeader::string("trace", format!("t-{offset}"))];
        builder.push(meta, headers, Bytes::from(format!("{{\"n\":{offset}}}")));
    }
    Arc::new(builder.build())
}

/// A fresh, empty directory under the system temp dir, unique to this call.
pub fn temp_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "iggy-connectors-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("can create a temp dir");
    dir
}

/// Shows the runtime's logs as `RUST_LOG` asks (none by default) in the test's output,
/// e.g. `RUST_LOG=runtime_core=debug cargo test ... -- --nocapture`. Any test may call
/// it; the first call in a process sets the subscriber up, later ones do nothing.
pub fn logs() {
    // Fails only when a subscriber is already set (an earlier call): nothing to do then.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// Shared with config-provider's tests, which cannot depend on this crate.
#[path = "../support/fixtures.rs"]
mod fixtures;
pub use fixtures::upstream_connectors_dir;

/// A client of `address`, connected and signed in as iggy/iggy (the user every test
/// and benchmark runs as, on our server or a real one).
pub async fn iggy_client(
    address: &str,
) -> Result<iggy::prelude::IggyClient, iggy::prelude::IggyError> {
    use iggy::prelude::*;
    let client = IggyClient::builder()
        .with_tcp()
        .with_server_address(address.to_owned())
        .with_auto_sign_in(AutoLogin::Enabled(Credentials::UsernamePassword(
            "iggy".to_owned(),
            "iggy".into(),
        )))
        .with_no_delay()
        .build()?;
    client.connect().await?;
    Ok(client)
}

/// Creates `stream` and its `topic` of `partitions` partitions, each unless it exists;
/// the topic is flushed on every send.
/// A real-server build that refuses the 0.11 client's topic options gets the topic from
/// `IGGY_TEST_CREATE_TOPIC_COMMAND` (see
/// [`iggy_test_server::TestTarget::create_topic_by_command`]).
pub async fn create_topic(
    client: &iggy::prelude::IggyClient,
    stream: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), String> {
    use iggy::prelude::*;
    let named = |name: &str| Identifier::named(name).map_err(|error| error.to_string());
    let (stream_id, topic_id) = (named(stream)?, named(topic)?);
    let failed = |what: &str, error: IggyError| format!("{what} {stream}/{topic}: {error}");
    if client
        .get_stream(&stream_id)
        .await
        .map_err(|error| failed("looking up", error))?
        .is_none()
    {
        client
            .create_stream(stream)
            .await
            .map_err(|error| failed("creating the stream of", error))?;
    }
    if client
        .get_topic(&stream_id, &topic_id)
        .await
        .map_err(|error| failed("looking up", error))?
        .is_some()
    {
        return Ok(());
    }
    // Flushed on every send, as the runtime makes its topics: tests kill the server,
    // and a real one loses what it acknowledged since its last flush.
    let options = TopicCreateOptions {
        partitions_count: Some(partitions),
        messages_required_to_save: Some(1),
        ..TopicCreateOptions::default()
    };
    match client.create_topic(&stream_id, topic, &options).await {
        Ok(_) => Ok(()),
        Err(IggyError::UnsupportedOptionKey(key)) => {
            iggy_test_server::TestTarget::create_topic_by_command(stream, topic, partitions)
                .unwrap_or_else(|| {
                    Err(format!(
                        "the server refuses the topic option {key:?}: set {}",
                        iggy_test_server::CREATE_TOPIC_COMMAND_ENV
                    ))
                })
        }
        Err(error) => Err(failed("creating", error)),
    }
}

/// Against a real server whose build refuses the 0.11 client's topic options
/// (`IGGY_TEST_CREATE_TOPIC_COMMAND` set), creates `stream` and its one-partition
/// `topic` before a runtime starts, since the runtime's own create would be refused
/// there; otherwise does nothing (the runtime creates them).
///
/// # Panics
/// If the server cannot be reached or the topic cannot be made: the test cannot go on.
pub async fn prepare_topic(address: &str, stream: &str, topic: &str) {
    if std::env::var_os(iggy_test_server::CREATE_TOPIC_COMMAND_ENV).is_none() {
        return;
    }
    let client = iggy_client(address).await.expect("connected to the server");
    if let Err(error) = create_topic(&client, stream, topic, 1).await {
        panic!("{error}");
    }
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A package of the workspace, read from its own `Cargo.toml`.
#[derive(Debug, Clone)]
pub struct Package {
    /// `[package] name`.
    pub name: String,
    /// Its directory, relative to the workspace (`crates/connectors/sinks/file`).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: toml::Table,
}

impl Package {
    /// `[package] description`, or empty.
    pub fn description(&self) -> &str {
        self.manifest["package"]
            .get("description")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
    }

    /// `[lib] crate-type`, or empty.
    pub fn crate_types(&self) -> Vec<&str> {
        let types = self
            .manifest
            .get("lib")
            .and_then(|lib| lib.get("crate-type"))
            .and_then(toml::Value::as_array);
        types
            .map(|types| types.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// Reads the package in `dir` (relative to the workspace).
///
/// # Panics
/// If it has no readable `Cargo.toml` with a `[package] name` (cargo refuses such a
/// workspace member too).
pub fn package(dir: &std::path::Path) -> Package {
    let path = workspace_dir().join(dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let manifest: toml::Table =
        toml::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let name = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{} has no [package] name", path.display()))
        .to_owned();
    Package {
        name,
        dir: dir.to_owned(),
        manifest,
    }
}

/// The directories a `members` entry of the root `Cargo.toml` names: the entry itself,
/// or for `dir/*` every directory in `dir` (as cargo expands it; the only glob the
/// workspace uses), sorted.
pub fn member_dirs(entry: &str) -> Vec<PathBuf> {
    let Some(parent) = entry.strip_suffix("/*") else {
        assert!(
            !entry.contains(['*', '?', '[']),
            "the tests read only `dir/*` globs in members, not {entry:?}"
        );
        return vec![PathBuf::from(entry)];
    };
    let listed = std::fs::read_dir(workspace_dir().join(parent))
        .unwrap_or_else(|error| panic!("members entry {entry:?}: {error}"));
    let mut dirs: Vec<PathBuf> = listed
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .map(|path| {
            let name = path.file_name().expect("a directory has a name");
            PathBuf::from(parent).join(name)
        })
        .collect();
    dirs.sort();
    dirs
}

/// Every member of the workspace, by package name.
pub fn workspace_packages() -> std::collections::BTreeMap<String, Package> {
    let root = std::fs::read_to_string(workspace_dir().join("Cargo.toml")).expect("Cargo.toml");
    let root: toml::Table = toml::from_str(&root).expect("the root Cargo.toml is TOML");
    let members = root["workspace"]["members"]
        .as_array()
        .expect("workspace.members is an array");
    let mut packages = std::collections::BTreeMap::new();
    for member in members {
        let entry = member.as_str().expect("a members entry is a string");
        for dir in member_dirs(entry) {
            let package = package(&dir);
            if let Some(other) = packages.insert(package.name.clone(), package) {
                panic!("two members are named {}", other.name);
            }
        }
    }
    packages
}

/// The directories connector crates live in, each with the kind of its connectors.
pub const CONNECTOR_DIRS: [(&str, connector_sdk::ConnectorKind); 2] = [
    (
        "crates/connectors/sinks",
        connector_sdk::ConnectorKind::Sink,
    ),
    (
        "crates/connectors/sources",
        connector_sdk::ConnectorKind::Source,
    ),
];

/// Every connector crate in the workspace (every package under [`CONNECTOR_DIRS`]),
/// with the kind its directory says, sorted by name.
pub fn connector_crates() -> Vec<(Package, connector_sdk::ConnectorKind)> {
    let mut crates: Vec<_> = CONNECTOR_DIRS
        .iter()
        .flat_map(|&(parent, kind)| {
            member_dirs(&format!("{parent}/*"))
                .into_iter()
                .map(move |dir| (package(&dir), kind))
        })
        .collect();
    crates.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    crates
}
