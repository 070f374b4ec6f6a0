//! Drives connectors: runs each source (plugin -> Iggy) and sink (Iggy -> plugin)
//! pipeline, persists source state, and reports status.
//!
//! The runtime is embeddable: a service builds a [`Runtime`] from connector configs, a
//! [`MessageBus`] (usually [`IggyBus`]) and a [`PluginRegistry`] (plugins loaded from
//! files or linked in), inside its own tokio runtime. Delivery is at least once: see the
//! `runner` module for the rules.
//!
//! Each connector can be started, stopped, paused, resumed, restarted and given a new
//! config version on its own ([`Runtime::start_connector`] and the methods next to it);
//! a failed connector is restarted with bounded exponential backoff ([`RestartPolicy`]).
//! [`Runtime::prometheus`] renders per-connector figures as Prometheus text.
//!
//! Messages are decoded, transformed and encoded on the way (the `transforms` crate)
//! when a connector has transforms or its schemas differ; a message that fails there
//! follows the connector's error policy like one the plugin failed on.

mod budget;
mod bus;
pub mod cluster;
mod control;
mod metrics;
mod plugin_config;
mod resume;
mod runner;
mod shape;
mod stall;
mod state;
mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use config_provider::{ActiveConfigs, ConnectorConfig, RestartConfig, RuntimeBehaviour};
use connector_sdk::ConnectorKind;
use plugin_host::PluginLoader;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transforms::TransformChain;

pub use bus::{
    BusError, BusErrorKind, ConnectingBus, Destination, GroupMember, GroupProgress, IggyBus,
    IggySettings, IncomingMessage, MARKER_SEARCH_DEPTH, MessageBus, OutgoingMessage,
    PartitionProgress, Polled, PreparedSend, READ_AHEAD_CONSUMER, SEND_MARKER_HEADER,
};
pub use metrics::prometheus_text;
pub use plugin_config::{ConfigDescription, ConfigField, check_plugin_config, typed_plugin_config};
/// A loaded or linked connector plugin, as `Runtime::plugins` lists them.
pub use plugin_host::Plugin;
pub use runner::RetryPolicy;
pub use stall::StallPolicy;
pub use state::{PendingSend, SavedState, StateStore};
pub use status::{
    ConnectorMetrics, ConnectorState, ConnectorStatus, LATENCY_BUCKETS, LatencyHistogram,
    STAGE_BUCKETS, Stage, StageHistogram, StageHistograms,
};
pub use transforms::TransformCounts;

use control::{Control, Desired};

/// Headers the runtime adds to a message it sends to a dead letter topic (string values).
pub mod dead_letter {
    /// The error that made the message fail.
    pub const ERROR: &str = "iggy-connect-error";
    /// The key of the connector it failed in.
    pub const CONNECTOR: &str = "iggy-connect-connector";
    /// The stream it was consumed from.
    pub const STREAM: &str = "iggy-connect-stream";
    /// The topic it was consumed from.
    pub const TOPIC: &str = "iggy-connect-topic";
    /// The partition it was consumed from.
    pub const PARTITION: &str = "iggy-connect-partition";
    /// Its offset in that partition.
    pub const OFFSET: &str = "iggy-connect-offset";
}
use status::StatusCell;

/// Checks what a connector's streams say about their payloads, as starting it would:
/// the Avro schema (inline or from `avro_schema_path`) and the Protobuf descriptor set
/// and message type. The error names the stream and the setting.
pub fn check_stream_schemas(config: &config_provider::ConnectorConfig) -> Result<(), String> {
    runner::connector_codecs(config).map(drop)
}

/// Finds the plugin a connector config names: a statically linked one registered under
/// that `path`, or else a library loaded from the file.
#[derive(Debug, Default)]
pub struct PluginRegistry {
    linked: BTreeMap<String, Plugin>,
    loader: PluginLoader,
}

impl PluginRegistry {
    /// A registry that loads libraries with `loader`.
    pub fn new(loader: PluginLoader) -> Self {
        PluginRegistry {
            linked: BTreeMap::new(),
            loader,
        }
    }

    /// Registers a linked plugin under the `path` configs will name it by.
    pub fn register(&mut self, path: impl Into<String>, plugin: Plugin) -> &mut Self {
        self.linked.insert(path.into(), plugin);
        self
    }

    /// The plugin for `path`.
    pub fn resolve(&self, path: &str) -> Result<Plugin, plugin_host::LoadError> {
        match self.linked.get(path) {
            Some(plugin) => Ok(plugin.clone()),
            None => self.loader.load(path),
        }
    }

    /// Every plugin known: the linked ones and the libraries loaded so far, one per
    /// connector name (a linked one first), by name.
    pub fn known(&self) -> Vec<Plugin> {
        let mut known: BTreeMap<String, Plugin> = BTreeMap::new();
        for plugin in self.linked.values().cloned().chain(self.loader.loaded()) {
            known.entry(plugin.name().to_owned()).or_insert(plugin);
        }
        known.into_values().collect()
    }

    /// The plugin `path` names if it is linked or already loaded; nothing is opened.
    pub fn known_at(&self, path: &str) -> Option<Plugin> {
        self.linked
            .get(path)
            .cloned()
            .or_else(|| self.loader.loaded_at(path))
    }

    /// Whether `path` names a linked plugin or a library the loader would open (it
    /// exists and lies inside the allowed directories), without opening it.
    pub fn check(&self, path: &str) -> Result<(), plugin_host::LoadError> {
        if self.linked.contains_key(path) {
            return Ok(());
        }
        self.loader.check(path).map(drop)
    }
}

/// What the runtime needs besides the configs.
#[derive(Clone)]
pub struct RuntimeContext {
    /// The way to Iggy.
    pub bus: Arc<dyn MessageBus>,
    /// Where source state lives.
    pub state: StateStore,
    /// How failed calls are retried, for connectors whose config has no `[retry]`.
    pub retry: RetryPolicy,
    /// How failed connectors are restarted.
    pub restart: RestartPolicy,
    /// How long stopping a connector waits for its batches in flight.
    pub stop_timeout: Duration,
    /// When a sink sitting on unread messages is reported stalled, and resets its
    /// consumer group.
    pub stall: StallPolicy,
    /// Bytes each connector's pipeline may hold, for connectors whose config sets no
    /// `memory_budget` (0: no limit); see `[runtime] memory_budget`.
    pub memory_budget: u64,
    /// This runtime as a member of a cluster: its sources run only while placed on
    /// it (see [`cluster`]). `None`: every source runs here.
    pub cluster: Option<cluster::Cluster>,
}

impl RuntimeContext {
    /// A context with the `[runtime]` section's policies.
    pub fn new(bus: Arc<dyn MessageBus>, state: StateStore, behaviour: &RuntimeBehaviour) -> Self {
        RuntimeContext {
            bus,
            state,
            retry: RetryPolicy::from(behaviour.retry),
            restart: RestartPolicy::from(behaviour.restart),
            stop_timeout: behaviour.shutdown_timeout.get(),
            stall: StallPolicy::new(behaviour.stall_timeout.get()),
            memory_budget: behaviour.memory_budget,
            cluster: None,
        }
    }
}

impl RuntimeContext {
    /// This context for a member of the cluster `settings` describes: its sources run
    /// only while the cluster places them on it, and keep their state in the cluster's
    /// state topic (not in files), so that the member that runs one next resumes it.
    pub fn in_cluster(mut self, settings: cluster::ClusterSettings) -> Self {
        self.state = StateStore::in_iggy(self.bus.clone(), &settings);
        self.cluster = Some(cluster::Cluster::new(settings, self.state.clone()));
        self
    }
}

impl std::fmt::Debug for RuntimeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeContext")
            .field("state", &self.state)
            .field("retry", &self.retry)
            .field("restart", &self.restart)
            .field("stop_timeout", &self.stop_timeout)
            .field("stall", &self.stall)
            .field("memory_budget", &self.memory_budget)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// How a failed connector is restarted: after `initial_backoff`, doubling up to
/// `max_backoff`, at most `max_restarts` times in a row (`None`: no limit). A connector
/// that ran for `max_backoff` since its last start counts from zero again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restart at all.
    pub enabled: bool,
    /// Pause before the first restart.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
    /// Restarts in a row before giving up.
    pub max_restarts: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::from(RestartConfig::default())
    }
}

impl From<RestartConfig> for RestartPolicy {
    fn from(config: RestartConfig) -> Self {
        RestartPolicy {
            enabled: config.enabled,
            initial_backoff: config.initial_backoff.get(),
            max_backoff: config.max_backoff.get(),
            max_restarts: (config.max_restarts > 0).then_some(config.max_restarts),
        }
    }
}

/// The [`ControlError`] for a plugin that cannot be had: refused before opening (it
/// does not exist, or is not allowed) or failed to load.
fn plugin_error(kind: ConnectorKind, key: String, error: &plugin_host::LoadError) -> ControlError {
    let message = error.to_string();
    match error {
        plugin_host::LoadError::NotFound { .. } => ControlError::PluginRefused {
            kind,
            key,
            message,
            not_allowed: false,
        },
        plugin_host::LoadError::NotAllowed { .. }
        | plugin_host::LoadError::SharedWritable { .. } => ControlError::PluginRefused {
            kind,
            key,
            message,
            not_allowed: true,
        },
        _ => ControlError::Plugin { kind, key, message },
    }
}

/// Why a lifecycle request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No connector of that kind has that key.
    #[error("no {kind} with key {key:?}")]
    UnknownConnector {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key asked for.
        key: String,
    },
    /// Pausing or resuming needs a connector that runs.
    #[error("{kind} {key:?} is not running")]
    NotRunning {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key asked for.
        key: String,
    },
    /// The connector's plugin could not be loaded.
    #[error("cannot load the plugin of {kind} {key:?}: {message}")]
    Plugin {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key asked for.
        key: String,
        /// The loader's error.
        message: String,
    },
    /// The connector's library does not exist, or lies outside the directories plugins
    /// may come from; it was not opened.
    #[error("{kind} {key:?}: {message}")]
    PluginRefused {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key asked for.
        key: String,
        /// The loader's error: the path, what it resolved to and the allowed
        /// directories.
        message: String,
        /// The file exists but lies outside the allowed directories (rather than not
        /// existing at all).
        not_allowed: bool,
    },
    /// The connector's config cannot run (a bad transform, say).
    #[error("{kind} {key:?} cannot run its config: {message}")]
    Config {
        /// Sink or source.
        kind: ConnectorKind,
        /// The key asked for.
        key: String,
        /// What is wrong, with the key in the config.
        message: String,
    },
    /// A new config version of a known connector did not start (its plugin could not
    /// open, say); the previous version is back, running again if it ran.
    #[error(
        "{kind} {key:?}: version {version} did not start: {message}; version {previous} is back{}",
        if *previous_runs { " and runs again" } else { " (stopped, as it was)" }
    )]
    ActivationFailed {
        /// Sink or source.
        kind: ConnectorKind,
        /// The connector.
        key: String,
        /// The version that did not start.
        version: u64,
        /// Why: its run's error.
        message: String,
        /// The version the connector has again.
        previous: u64,
        /// Whether the previous version ran, and so runs again.
        previous_runs: bool,
    },
    /// A new config version ran, but the config provider could not record it as
    /// active; the previous version is back.
    #[error(
        "{kind} {key:?}: the new version is not recorded as active ({error}); the previous version is back"
    )]
    NotRecorded {
        /// Sink or source.
        kind: ConnectorKind,
        /// The connector.
        key: String,
        /// The provider's error.
        error: config_provider::ProviderError,
    },
    /// The runtime is shutting down.
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

/// How long activating a config version waits for the new version's run to open its
/// plugin and reach Iggy before keeping it (see [`Runtime::apply_config`]).
pub const ACTIVATION_WAIT: Duration = Duration::from_secs(30);

/// One connector: its config, status and (while started) its supervisor task.
#[derive(Debug)]
struct Slot {
    config: ConnectorConfig,
    desired: watch::Sender<Desired>,
    task: Option<JoinHandle<()>>,
    /// Why the connector's config could not be used: `config` is then only a
    /// placeholder ([`config_provider::BrokenConfig::placeholder`]) that lists it, and
    /// only a new config runs it.
    unusable: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    status: StatusCell,
    /// Serialises lifecycle requests on one connector.
    slot: Arc<tokio::sync::Mutex<Slot>>,
}

#[derive(Debug)]
struct Inner {
    context: RuntimeContext,
    plugins: PluginRegistry,
    connectors: Mutex<BTreeMap<(ConnectorKind, String), Entry>>,
    /// Connector configs that cannot be used and do not even say their kind.
    kindless: Vec<String>,
    /// The last [`ConnectorStatus::id`] given.
    last_id: std::sync::atomic::AtomicU32,
    shutting_down: std::sync::atomic::AtomicBool,
    /// The cluster member's coordinator, while it runs.
    coordinator: Mutex<Option<JoinHandle<()>>>,
}

/// Running connectors. Cheap to clone: clones share the connectors.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Starts every enabled connector of `configs` (disabled ones are listed as
    /// `stopped` and can be started later). A connector that cannot run as configured
    /// (its config is one of `configs.broken`, or its plugin cannot be loaded) is
    /// listed with state `error` and the reason; the others run.
    pub async fn start(
        configs: ActiveConfigs,
        plugins: PluginRegistry,
        context: RuntimeContext,
    ) -> Runtime {
        let mut kindless = Vec::new();
        let mut unusable = Vec::new();
        for broken in configs.broken {
            match broken.placeholder() {
                Some(placeholder) => unusable.push((placeholder, broken.problem.to_string())),
                None => kindless.push(broken.problem.to_string()),
            }
        }
        let runtime = Runtime {
            inner: Arc::new(Inner {
                context,
                plugins,
                connectors: Mutex::new(BTreeMap::new()),
                kindless,
                last_id: std::sync::atomic::AtomicU32::new(0),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                coordinator: Mutex::new(None),
            }),
        };
        if let Some(cluster) = &runtime.inner.context.cluster {
            let coordinator = tokio::spawn(
                cluster
                    .clone()
                    .coordinate(runtime.inner.context.bus.clone()),
            );
            *runtime
                .inner
                .coordinator
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(coordinator);
        }
        for (placeholder, problem) in unusable {
            runtime.list_unusable(placeholder, problem);
        }
        for config in configs
            .sources
            .into_values()
            .chain(configs.sinks.into_values())
        {
            // A fresh connector cannot be refused: its plugin error shows in its status.
            let _ = runtime.apply_config(config).await;
        }
        runtime
    }

    /// Lists a connector whose config cannot be used, by `placeholder`, with state
    /// `error` and `problem` as its last error.
    fn list_unusable(&self, placeholder: ConnectorConfig, problem: String) {
        let (kind, key) = (placeholder.kind(), placeholder.common().key.clone());
        tracing::error!(connector = %key, %kind, error = %problem, "the connector's config cannot be used; it does not run");
        let status =
            StatusCell::new(kind, &key, placeholder.common().version).with_id(self.next_id());
        status.config_error(problem.clone());
        let entry = Entry {
            status,
            slot: Arc::new(tokio::sync::Mutex::new(Slot {
                config: placeholder,
                desired: watch::channel(Desired::Stop).0,
                task: None,
                unusable: Some(problem),
            })),
        };
        self.entries().insert((kind, key), entry);
    }

    /// The problems of the connector configs that cannot be used and do not say
    /// whether they are a sink or a source, so are listed as neither (`/ready` and the
    /// log name them).
    pub fn kindless_configs(&self) -> &[String] {
        &self.inner.kindless
    }

    /// The next [`ConnectorStatus::id`]: 1, 2, ... in the order connectors are first
    /// known.
    fn next_id(&self) -> u32 {
        self.inner
            .last_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<(ConnectorKind, String), Entry>> {
        self.inner
            .connectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry(&self, kind: ConnectorKind, key: &str) -> Result<Entry, ControlError> {
        self.entries()
            .get(&(kind, key.to_owned()))
            .cloned()
            .ok_or_else(|| ControlError::UnknownConnector {
                kind,
                key: key.to_owned(),
            })
    }

    /// The status of every connector, sources first, each kind by key.
    pub fn statuses(&self) -> Vec<ConnectorStatus> {
        let mut statuses: Vec<ConnectorStatus> = self
            .entries()
            .values()
            .map(|entry| entry.status.snapshot())
            .collect();
        statuses.sort_by(|a, b| {
            let order = |status: &ConnectorStatus| status.kind != ConnectorKind::Source;
            (order(a), &a.key).cmp(&(order(b), &b.key))
        });
        statuses
    }

    /// The status of one connector.
    pub fn status(&self, kind: ConnectorKind, key: &str) -> Option<ConnectorStatus> {
        self.entries()
            .get(&(kind, key.to_owned()))
            .map(|entry| entry.status.snapshot())
    }

    /// The config a connector runs (or would run, when stopped).
    pub async fn config(&self, kind: ConnectorKind, key: &str) -> Option<ConnectorConfig> {
        let entry = self.entry(kind, key).ok()?;
        let slot = entry.slot.lock().await;
        Some(slot.config.clone())
    }

    /// Every connector's figures as Prometheus text, and the bus connection.
    pub fn prometheus(&self) -> String {
        let mut text = prometheus_text(&self.statuses());
        text.push_str("# HELP iggy_connectors_iggy_connected 1 while the connection to Iggy is up.\n# TYPE iggy_connectors_iggy_connected gauge\n");
        text.push_str(&format!(
            "iggy_connectors_iggy_connected {}\n",
            u8::from(self.iggy_connected())
        ));
        text
    }

    /// Whether the connection to Iggy is up.
    pub fn iggy_connected(&self) -> bool {
        self.inner.context.bus.connected()
    }

    /// Runs `config` for its connector: a new key is added, a known one is stopped
    /// (batches in flight finish) and started again with the new config, if enabled.
    /// [`Runtime::activate`] without recording anything.
    pub async fn apply_config(&self, config: ConnectorConfig) -> Result<(), ControlError> {
        self.activate(config, async { Ok(()) }).await
    }

    /// Activates `config`, another version of its connector, and then `record`s it
    /// (the provider storing it as active) while the connector is still held, so that
    /// no other request on it comes in between.
    ///
    /// A known connector whose new config cannot start, whose run fails before it
    /// runs (its plugin cannot open, Iggy refuses its topics), or whose `record` fails,
    /// gets its previous config back (running again if it ran; listed as unusable
    /// again if it was), and the error says so ([`ControlError::ActivationFailed`],
    /// [`ControlError::NotRecorded`]); a new config still starting after
    /// [`ACTIVATION_WAIT`] is kept. A new key is not waited for: its failure shows in
    /// its status.
    pub async fn activate(
        &self,
        config: ConnectorConfig,
        record: impl std::future::Future<Output = Result<(), config_provider::ProviderError>>,
    ) -> Result<(), ControlError> {
        let kind = config.kind();
        let key = config.common().key.clone();
        let (entry, known) = {
            let mut entries = self.entries();
            match entries.get(&(kind, key.clone())) {
                Some(entry) => (entry.clone(), true),
                None => {
                    let entry = Entry {
                        status: StatusCell::new(kind, &key, config.common().version)
                            .with_id(self.next_id())
                            .stalled_after(self.inner.context.stall.report_after),
                        slot: Arc::new(tokio::sync::Mutex::new(Slot {
                            config: config.clone(),
                            desired: watch::channel(Desired::Stop).0,
                            task: None,
                            unusable: None,
                        })),
                    };
                    entries.insert((kind, key.clone()), entry.clone());
                    (entry, false)
                }
            }
        };
        let mut slot = entry.slot.lock().await;
        let previous_unusable = slot.unusable.take();
        let was_running = slot.task.as_ref().is_some_and(|task| !task.is_finished());
        self.stop_slot(&mut slot, &entry.status).await;
        let previous = std::mem::replace(&mut slot.config, config);
        entry.status.set_version(slot.config.common().version);
        let ran = if slot.config.common().enabled {
            match self.start_slot(&mut slot, &entry.status) {
                Ok(()) if known => {
                    self.opened(&entry.status, &slot, &previous, was_running)
                        .await
                }
                other => other,
            }
        } else {
            tracing::info!(connector = %key, %kind, "disabled");
            entry.status.set_state(ConnectorState::Stopped);
            Ok(())
        };
        let outcome = match ran {
            Ok(()) => record.await.map_err(|error| ControlError::NotRecorded {
                kind,
                key: key.clone(),
                error,
            }),
            Err(error) => Err(error),
        };
        let Err(error) = outcome else {
            return Ok(());
        };
        if !known {
            return Err(error);
        }
        tracing::error!(
            connector = %key,
            %kind,
            version = slot.config.common().version,
            previous = previous.common().version,
            restarted = was_running,
            %error,
            "the new config version did not take; the previous one is back"
        );
        self.stop_slot(&mut slot, &entry.status).await;
        slot.config = previous;
        entry.status.set_version(slot.config.common().version);
        if let Some(problem) = previous_unusable {
            // Listed by a placeholder again: it must not run.
            entry.status.config_error(problem.clone());
            slot.unusable = Some(problem);
        } else if was_running {
            // It ran a moment ago: a failure now shows in its status, as it would have.
            let _ = self.start_slot(&mut slot, &entry.status);
        } else {
            entry.status.set_state(ConnectorState::Stopped);
        }
        Err(error)
    }

    /// Waits (up to [`ACTIVATION_WAIT`]) for a new version's run to leave `starting`:
    /// `Err` when it failed first.
    async fn opened(
        &self,
        status: &StatusCell,
        slot: &Slot,
        previous: &ConnectorConfig,
        was_running: bool,
    ) -> Result<(), ControlError> {
        let state = status
            .wait_for_state(|state| state != ConnectorState::Starting, ACTIVATION_WAIT)
            .await;
        if !matches!(
            state,
            ConnectorState::Failed | ConnectorState::Restarting | ConnectorState::Error
        ) {
            return Ok(());
        }
        Err(ControlError::ActivationFailed {
            kind: slot.config.kind(),
            key: slot.config.common().key.clone(),
            version: slot.config.common().version,
            message: status.snapshot().last_error.unwrap_or_default(),
            previous: previous.common().version,
            previous_runs: was_running,
        })
    }

    /// Every plugin the runtime knows (see [`PluginRegistry::known`]): what `GET
    /// /plugins` lists.
    pub fn plugins(&self) -> Vec<Plugin> {
        self.inner.plugins.known()
    }

    /// `config` as the API shows it ([`ConnectorConfig::redacted`]), with the
    /// `plugin_config` fields its plugin marks secret redacted too, when that plugin is
    /// linked or loaded.
    pub fn redacted(&self, config: &ConnectorConfig) -> serde_json::Value {
        let mut value = config.redacted();
        if let Some(plugin_config) = value.get_mut("plugin_config") {
            for key in self.secret_plugin_fields(config) {
                config_provider::redact_path(plugin_config, &key);
            }
        }
        value
    }

    /// The keys of the `plugin_config` fields that `config`'s plugin marks secret,
    /// whatever their names; none when the plugin is neither linked nor loaded.
    fn secret_plugin_fields(&self, config: &ConnectorConfig) -> Vec<String> {
        self.plugin_for(config)
            .map(|plugin| secret_fields_of(&plugin))
            .unwrap_or_default()
    }

    /// The plugin `config` names, when it is linked in or was loaded (its name and
    /// version, say); `None` before its library was first opened, or when it cannot be.
    pub fn plugin_for(&self, config: &ConnectorConfig) -> Option<Plugin> {
        self.inner.plugins.known_at(&config.common().path)
    }

    /// The known plugin whose connector is called `name` (`stdout`, ...).
    pub fn plugin(&self, name: &str) -> Option<Plugin> {
        self.plugins()
            .into_iter()
            .find(|plugin| plugin.name() == name)
    }

    /// Whether `config`'s plugin could be loaded: a linked plugin, or a library that
    /// exists inside the allowed directories. Nothing is opened. Checked before a
    /// config version is stored or activated, so that a refused library never becomes
    /// the active config.
    pub fn check_plugin(&self, config: &ConnectorConfig) -> Result<(), ControlError> {
        self.inner
            .plugins
            .check(&config.common().path)
            .map_err(|error| plugin_error(config.kind(), config.common().key.clone(), &error))
    }

    /// Starts a stopped or failed connector; a running one is left alone (a paused one
    /// resumes).
    pub async fn start_connector(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<(), ControlError> {
        let entry = self.entry(kind, key)?;
        let mut slot = entry.slot.lock().await;
        if slot.task.as_ref().is_some_and(|task| !task.is_finished()) {
            slot.desired.send_replace(Desired::Run);
            return Ok(());
        }
        self.start_slot(&mut slot, &entry.status)
    }

    /// Stops a connector: no more polling, batches in flight finish (up to the stop
    /// timeout), the plugin is closed. It stays stopped until started.
    pub async fn stop_connector(&self, kind: ConnectorKind, key: &str) -> Result<(), ControlError> {
        let entry = self.entry(kind, key)?;
        let mut slot = entry.slot.lock().await;
        self.stop_slot(&mut slot, &entry.status).await;
        Ok(())
    }

    /// Pauses a running connector after its current batch; the plugin stays open.
    pub async fn pause_connector(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<(), ControlError> {
        self.steer(kind, key, Desired::Pause).await
    }

    /// Resumes a paused connector.
    pub async fn resume_connector(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<(), ControlError> {
        self.steer(kind, key, Desired::Run).await
    }

    /// Stops and starts a connector with the config it has.
    pub async fn restart_connector(
        &self,
        kind: ConnectorKind,
        key: &str,
    ) -> Result<(), ControlError> {
        let entry = self.entry(kind, key)?;
        let mut slot = entry.slot.lock().await;
        self.stop_slot(&mut slot, &entry.status).await;
        self.start_slot(&mut slot, &entry.status)
    }

    async fn steer(
        &self,
        kind: ConnectorKind,
        key: &str,
        desired: Desired,
    ) -> Result<(), ControlError> {
        let entry = self.entry(kind, key)?;
        let slot = entry.slot.lock().await;
        if slot.task.as_ref().is_none_or(JoinHandle::is_finished) {
            return Err(ControlError::NotRunning {
                kind,
                key: key.to_owned(),
            });
        }
        slot.desired.send_replace(desired);
        Ok(())
    }

    fn start_slot(&self, slot: &mut Slot, status: &StatusCell) -> Result<(), ControlError> {
        if self
            .inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ControlError::ShuttingDown);
        }
        let config = slot.config.clone();
        let (kind, key) = (config.kind(), config.common().key.clone());
        if let Some(problem) = &slot.unusable {
            return Err(ControlError::Config {
                kind,
                key,
                message: format!(
                    "its config cannot be used ({problem}); give it a new config version"
                ),
            });
        }
        let plugin = match self.inner.plugins.resolve(&config.common().path) {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(connector = %key, %kind, %error, "cannot load the plugin");
                status.config_error(error.to_string());
                return Err(plugin_error(kind, key, &error));
            }
        };
        // Now that the plugin is loaded, before anything of it runs and can fail.
        remember_plugin_secrets(&plugin, &config);
        let chain = match TransformChain::new(kind, &config.common().transforms.0) {
            Ok(chain) => chain,
            Err(message) => {
                tracing::error!(connector = %key, %kind, error = %message, "invalid transforms");
                status.config_error(message.clone());
                return Err(ControlError::Config { kind, key, message });
            }
        };
        status.set_transforms(chain.clone());
        let (desired, receiver) = watch::channel(Desired::Run);
        slot.desired = desired;
        status.set_state(ConnectorState::Starting);
        slot.task = Some(tokio::spawn(supervise(
            config,
            chain,
            plugin,
            self.inner.context.clone(),
            status.clone(),
            Control::new(receiver),
        )));
        Ok(())
    }

    async fn stop_slot(&self, slot: &mut Slot, status: &StatusCell) {
        slot.desired.send_replace(Desired::Stop);
        if let Some(mut task) = slot.task.take() {
            let deadline = self.inner.context.stop_timeout;
            if tokio::time::timeout(deadline, &mut task).await.is_err() {
                tracing::warn!(connector = %slot.config.common().key, kind = %slot.config.kind(), ?deadline, "did not stop in time; abandoning it");
                task.abort();
                let _ = task.await;
            }
        }
        status.settle(ConnectorState::Stopped);
    }

    /// Stops every connector: no more polling, batches in flight finish (up to
    /// `deadline` in all), plugins are closed. No connector can be started afterwards.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let entries: Vec<Entry> = self.entries().values().cloned().collect();
        let mut slots = Vec::new();
        for entry in &entries {
            let mut slot = entry.slot.lock().await;
            slot.desired.send_replace(Desired::Stop);
            slots.push((slot.task.take(), entry.status.clone()));
        }
        let finished = tokio::time::timeout(deadline, async {
            for (task, _) in &mut slots {
                if let Some(handle) = task.as_mut() {
                    let _ = handle.await;
                    *task = None;
                }
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                ?deadline,
                "connectors did not stop in time; abandoning them"
            );
        }
        for (task, status) in slots {
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
            status.settle(ConnectorState::Stopped);
        }
        // Its sources have stopped: leave, so that the others take them over at once.
        if let Some(cluster) = &self.inner.context.cluster {
            cluster.leave();
            let coordinator = self
                .inner
                .coordinator
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(mut coordinator) = coordinator
                && tokio::time::timeout(cluster.settings().sync_interval * 4, &mut coordinator)
                    .await
                    .is_err()
            {
                coordinator.abort();
                tracing::warn!(cluster = %cluster.settings().name, "did not leave the cluster's group in time; the server deals its partitions out once the connection closes");
            }
        }
    }

    /// Why this cluster member runs no sources now (not in the cluster's group yet,
    /// or cut off from Iggy); `None` when it takes part, or outside cluster mode.
    pub fn cluster_problem(&self) -> Option<String> {
        self.inner.context.cluster.as_ref()?.problem()
    }

    /// The cluster as this member sees it (`GET /cluster`), with the sources this
    /// runtime has configs for placed on their members; `None` outside cluster mode.
    pub fn cluster_view(&self) -> Option<cluster::ClusterView> {
        let cluster = self.inner.context.cluster.as_ref()?;
        let sources: Vec<String> = self
            .entries()
            .keys()
            .filter(|(kind, _)| *kind == ConnectorKind::Source)
            .map(|(_, key)| key.clone())
            .collect();
        Some(cluster.view(&sources))
    }
}

/// The keys of the `plugin_config` fields `plugin` marks secret, whatever their names.
fn secret_fields_of(plugin: &Plugin) -> Vec<String> {
    ConfigDescription::of(plugin)
        .map(|description| {
            description
                .fields()
                .iter()
                .filter(|field| field.secret)
                .map(|field| field.key.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Remembers, for [`config_provider::scrub_secrets`], the values of the
/// `plugin_config` fields of `config` that `plugin` marks secret, so that an error
/// quoting one shows `******` (fields named like secrets were remembered on loading).
pub fn remember_plugin_secrets(plugin: &Plugin, config: &ConnectorConfig) {
    let mut plugin_config = config.plugin_config();
    for key in secret_fields_of(plugin) {
        config_provider::visit_path(&mut plugin_config, &key, &mut |value| {
            if let Some(text) = value.as_str() {
                config_provider::remember_secret(text);
            }
        });
    }
}

/// Runs a connector, restarting it after failures as the policy says.
async fn supervise(
    config: ConnectorConfig,
    chain: TransformChain,
    plugin: Plugin,
    context: RuntimeContext,
    status: StatusCell,
    mut control: Control,
) {
    let key = config.common().key.clone();
    let kind = config.kind();
    let retry = config
        .common()
        .retry
        .map_or(context.retry, RetryPolicy::from);
    let mut in_a_row = 0u32;
    // A cluster member runs a source only while the cluster places it here.
    let cluster = match (&context.cluster, kind) {
        (Some(cluster), ConnectorKind::Source) => Some(cluster.clone()),
        _ => None,
    };
    loop {
        if let Some(cluster) = &cluster
            && !cluster.runs_here(&key)
        {
            status.set_state(ConnectorState::Standby);
            tracing::info!(connector = %key, %kind, "runs on another member of the cluster; waiting for it to be placed here");
            tokio::select! {
                () = control.stopping() => {
                    status.settle(ConnectorState::Stopped);
                    return;
                }
                () = cluster.placed_here(&key) => {}
            }
            tracing::info!(connector = %key, %kind, "placed on this member of the cluster; starting");
        }
        status.starting();
        let started = tokio::time::Instant::now();
        let run = runner::ConnectorRun {
            config: &config,
            chain: &chain,
            plugin: &plugin,
            context: &context,
            retry,
            status: &status,
        };
        let run_control = match &cluster {
            Some(cluster) => {
                let (cluster, key) = (cluster.clone(), key.clone());
                control.or_stop_when(async move { cluster.moved_away(&key).await })
            }
            None => control.clone(),
        };
        match &cluster {
            // Moved to another member: the batch in flight gets `sync_interval` to
            // finish; then the runtime stops waiting for it (its member is cut off
            // from Iggy, say) and reports the source stopped here. A send already
            // handed to the client may still land later: duplicates only.
            Some(cluster) => {
                let grace = cluster.settings().sync_interval;
                let moved = async {
                    cluster.moved_away(&key).await;
                    tokio::time::sleep(grace).await;
                };
                tokio::select! {
                    () = run.run(run_control) => {}
                    () = moved => {
                        tracing::warn!(connector = %key, %kind, ?grace, "moved to another member of the cluster; abandoned the batch it had in flight");
                    }
                }
            }
            None => run.run(run_control).await,
        }
        if control.stop_requested() {
            status.settle(ConnectorState::Stopped);
            return;
        }
        if let Some(cluster) = &cluster
            && !cluster.runs_here(&key)
        {
            tracing::info!(connector = %key, %kind, "stopped here: the cluster placed it on another member");
            in_a_row = 0;
            continue;
        }
        if status.snapshot().state != ConnectorState::Failed {
            status.settle(ConnectorState::Stopped);
            return;
        }
        let policy = context.restart;
        if started.elapsed() >= policy.max_backoff {
            in_a_row = 0;
        }
        if !policy.enabled || policy.max_restarts.is_some_and(|max| in_a_row >= max) {
            tracing::error!(connector = %key, %kind, error = status.snapshot().last_error.unwrap_or_default(), "failed; not restarting");
            return;
        }
        let pause = policy
            .initial_backoff
            .saturating_mul(1 << in_a_row.min(16))
            .min(policy.max_backoff);
        in_a_row += 1;
        status.restarting();
        tracing::warn!(connector = %key, %kind, ?pause, restart = in_a_row, error = status.snapshot().last_error.unwrap_or_default(), "failed; restarting");
        tokio::select! {
            () = control.stopping() => {
                status.set_state(ConnectorState::Stopped);
                return;
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
}
