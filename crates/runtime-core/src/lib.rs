//! Drives connectors: runs each source (plugin -> Iggy) and sink (Iggy -> plugin)
//! pipeline, persists source state, and reports status.
//!
//! The runtime is embeddable: a service builds a [`Runtime`] from connector configs, a
//! [`MessageBus`] (usually [`IggyBus`]) and a [`PluginRegistry`] (plugins loaded from
//! files or linked in), inside its own tokio runtime. Delivery is at least once: see the
//! `runner` module for the rules.
//!
//! Not there yet (see the runtime-core issue): transforms, error policies (skip, dead
//! letter), automatic restarts, pause/resume, metrics, pipelined sink batches.

mod bus;
mod runner;
mod state;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use config_provider::{ActiveConfigs, ConnectorConfig};
use connector_sdk::ConnectorKind;
use plugin_host::{OpenOptions, Plugin, PluginLoader};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use bus::{
    BusError, IggyBus, IggySettings, IncomingMessage, MessageBus, OutgoingMessage, Polled,
};
pub use runner::RetryPolicy;
pub use state::StateStore;
pub use status::{ConnectorState, ConnectorStatus};

use status::StatusCell;

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
}

/// Running connectors.
#[derive(Debug)]
pub struct Runtime {
    statuses: Vec<StatusCell>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Sinks are shared by their topics' tasks; closed here once those have ended.
    sinks: Vec<(String, Arc<plugin_host::SinkInstance>)>,
}

/// What the runtime needs besides the configs.
#[derive(Clone)]
pub struct RuntimeContext {
    /// The way to Iggy.
    pub bus: Arc<dyn MessageBus>,
    /// Where source state lives.
    pub state: StateStore,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for RuntimeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeContext")
            .field("state", &self.state)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts every enabled connector of `configs`. A connector whose plugin cannot be
    /// loaded or opened is reported `failed` with the reason; the others run.
    pub async fn start(
        configs: ActiveConfigs,
        plugins: &PluginRegistry,
        context: RuntimeContext,
    ) -> Runtime {
        let (shutdown, _) = watch::channel(false);
        let mut runtime = Runtime {
            statuses: Vec::new(),
            shutdown,
            tasks: JoinSet::new(),
            sinks: Vec::new(),
        };
        for config in configs
            .sources
            .into_values()
            .chain(configs.sinks.into_values())
        {
            if !config.enabled() {
                tracing::info!(connector = %config.key(), kind = %config.kind(), "disabled");
                continue;
            }
            runtime.start_connector(config, plugins, &context).await;
        }
        runtime
    }

    async fn start_connector(
        &mut self,
        config: ConnectorConfig,
        plugins: &PluginRegistry,
        context: &RuntimeContext,
    ) {
        let status = StatusCell::new(config.kind(), config.key(), config.version());
        self.statuses.push(status.clone());
        let key = config.key().to_owned();
        let kind = config.kind();
        let path = match &config {
            ConnectorConfig::Sink(sink) => sink.path.clone(),
            ConnectorConfig::Source(source) => source.path.clone(),
        };
        let plugin = match plugins.resolve(&path) {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(connector = %key, %kind, %error, "cannot load the plugin");
                status.fail(error.to_string());
                return;
            }
        };
        let transforms = match &config {
            ConnectorConfig::Sink(sink) => sink.transforms.0.len(),
            ConnectorConfig::Source(source) => source.transforms.0.len(),
        };
        if transforms > 0 {
            tracing::warn!(connector = %key, %kind, transforms, "transforms are not applied yet: messages pass unchanged");
        }
        let plugin_config = config.plugin_config().to_string();
        match config {
            ConnectorConfig::Source(source_config) => {
                let state = match context.state.read(&key).await {
                    Ok(state) => state,
                    Err(error) => {
                        status.fail(format!("cannot read the source state: {error}"));
                        return;
                    }
                };
                let opened = plugin
                    .open_source(
                        &key,
                        &plugin_config,
                        state.as_deref(),
                        OpenOptions::default(),
                    )
                    .await;
                let source = match opened {
                    Ok(source) => source,
                    Err(error) => {
                        tracing::error!(connector = %key, %kind, %error, "cannot open");
                        status.fail(error.to_string());
                        return;
                    }
                };
                tracing::info!(connector = %key, %kind, version = source_config.version, "started");
                self.tasks.spawn(runner::run_source(
                    source_config,
                    source,
                    context.bus.clone(),
                    context.state.clone(),
                    context.retry,
                    status,
                    self.shutdown.subscribe(),
                ));
            }
            ConnectorConfig::Sink(sink_config) => {
                let opened = plugin
                    .open_sink(&key, &plugin_config, OpenOptions::default())
                    .await;
                let sink = match opened {
                    Ok(sink) => Arc::new(sink),
                    Err(error) => {
                        tracing::error!(connector = %key, %kind, %error, "cannot open");
                        status.fail(error.to_string());
                        return;
                    }
                };
                tracing::info!(connector = %key, %kind, version = sink_config.version, "started");
                let sink_config = Arc::new(sink_config);
                self.sinks.push((key.clone(), sink.clone()));
                for stream in &sink_config.streams {
                    for topic in &stream.topics {
                        self.tasks.spawn(runner::run_sink_topic(
                            sink_config.clone(),
                            stream.clone(),
                            topic.clone(),
                            sink.clone(),
                            context.bus.clone(),
                            context.retry,
                            status.clone(),
                            self.shutdown.subscribe(),
                        ));
                    }
                }
            }
        }
    }

    /// The status of every connector started (enabled ones).
    pub fn statuses(&self) -> Vec<ConnectorStatus> {
        self.statuses.iter().map(StatusCell::snapshot).collect()
    }

    /// The status of one connector.
    pub fn status(&self, kind: ConnectorKind, key: &str) -> Option<ConnectorStatus> {
        self.statuses()
            .into_iter()
            .find(|status| status.kind == kind && status.key == key)
    }

    /// Stops polling, lets batches in flight finish (up to `deadline`), closes plugins.
    pub async fn shutdown(mut self, deadline: Duration) {
        let _ = self.shutdown.send(true);
        let finished = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                ?deadline,
                "connectors did not stop in time; abandoning them"
            );
            self.tasks.abort_all();
        }
        for status in &self.statuses {
            if status.snapshot().state != ConnectorState::Failed {
                status.set_state(ConnectorState::Stopped);
            }
        }
    }
}
