//! Drives connectors: runs each source (plugin -> Iggy) and sink (Iggy -> plugin)
//! pipeline, persists source state, and reports status.
//!
//! The runtime is embeddable: a service builds a [`Runtime`] from connector configs, a
//! [`MessageBus`] (usually [`IggyBus`]) and a [`PluginRegistry`] (plugins loaded from
//! files or linked in), inside its own tokio runtime. Delivery is at least once: see the
//! `runner` module for the rules.
//!
//! A failed connector is restarted with bounded exponential backoff ([`RestartPolicy`]).
//! [`Runtime::prometheus`] renders per-connector counters as Prometheus text.
//!
//! Not there yet (see the runtime-core issue): transforms, error policies (skip, dead
//! letter), start/stop/pause/resume of one connector, byte and latency metrics,
//! pipelined sink batches.

mod bus;
mod metrics;
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
pub use metrics::prometheus_text;
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
    /// How failed connectors are restarted.
    pub restart: RestartPolicy,
}

impl std::fmt::Debug for RuntimeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeContext")
            .field("state", &self.state)
            .field("retry", &self.retry)
            .field("restart", &self.restart)
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
        RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_restarts: None,
        }
    }
}

impl Runtime {
    /// Starts every enabled connector of `configs`. A connector whose plugin cannot be
    /// loaded is reported `failed` with the reason; the others run.
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
            let status = StatusCell::new(config.kind(), config.key(), config.version());
            runtime.statuses.push(status.clone());
            let path = match &config {
                ConnectorConfig::Sink(sink) => sink.path.clone(),
                ConnectorConfig::Source(source) => source.path.clone(),
            };
            let plugin = match plugins.resolve(&path) {
                Ok(plugin) => plugin,
                Err(error) => {
                    tracing::error!(connector = %config.key(), kind = %config.kind(), %error, "cannot load the plugin");
                    status.fail(error.to_string());
                    continue;
                }
            };
            let transforms = match &config {
                ConnectorConfig::Sink(sink) => sink.transforms.0.len(),
                ConnectorConfig::Source(source) => source.transforms.0.len(),
            };
            if transforms > 0 {
                tracing::warn!(connector = %config.key(), kind = %config.kind(), transforms, "transforms are not applied yet: messages pass unchanged");
            }
            runtime.tasks.spawn(supervise(
                config,
                plugin,
                context.clone(),
                status,
                runtime.shutdown.subscribe(),
            ));
        }
        runtime
    }

    /// The status of every connector started (enabled ones).
    pub fn statuses(&self) -> Vec<ConnectorStatus> {
        self.statuses.iter().map(StatusCell::snapshot).collect()
    }

    /// Every connector's figures as Prometheus text.
    pub fn prometheus(&self) -> String {
        prometheus_text(&self.statuses())
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
            while self.tasks.join_next().await.is_some() {}
        }
        for status in &self.statuses {
            if status.snapshot().state != ConnectorState::Failed {
                status.set_state(ConnectorState::Stopped);
            }
        }
    }
}

/// Runs a connector, restarting it after failures as the policy says.
async fn supervise(
    config: ConnectorConfig,
    plugin: Plugin,
    context: RuntimeContext,
    status: StatusCell,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = config.key().to_owned();
    let kind = config.kind();
    let mut in_a_row = 0u32;
    loop {
        status.set_state(ConnectorState::Starting);
        let started = tokio::time::Instant::now();
        run_once(&config, &plugin, &context, &status, shutdown.clone()).await;
        if *shutdown.borrow() || status.snapshot().state != ConnectorState::Failed {
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
            () = runner::stopped(&mut shutdown) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Opens the connector's plugin instance and runs it until it stops or fails.
async fn run_once(
    config: &ConnectorConfig,
    plugin: &Plugin,
    context: &RuntimeContext,
    status: &StatusCell,
    shutdown: watch::Receiver<bool>,
) {
    let key = config.key();
    let kind = config.kind();
    let plugin_config = config.plugin_config().to_string();
    match config {
        ConnectorConfig::Source(source_config) => {
            let state = match context.state.read(key).await {
                Ok(state) => state,
                Err(error) => {
                    status.fail(format!("cannot read the source state: {error}"));
                    return;
                }
            };
            let opened = plugin
                .open_source(
                    key,
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
            runner::run_source(
                source_config.clone(),
                source,
                context.bus.clone(),
                context.state.clone(),
                context.retry,
                status.clone(),
                shutdown,
            )
            .await;
        }
        ConnectorConfig::Sink(sink_config) => {
            let opened = plugin
                .open_sink(key, &plugin_config, OpenOptions::default())
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
            // One task per topic; when one fails, the others stop too.
            let (stop, _) = watch::channel(false);
            let mut topics = JoinSet::new();
            let sink_config = Arc::new(sink_config.clone());
            for stream in &sink_config.streams {
                for topic in &stream.topics {
                    topics.spawn(runner::run_sink_topic(
                        sink_config.clone(),
                        stream.clone(),
                        topic.clone(),
                        sink.clone(),
                        context.bus.clone(),
                        context.retry,
                        status.clone(),
                        stop.subscribe(),
                    ));
                }
            }
            let mut shutdown = shutdown;
            let mut stopping = false;
            loop {
                tokio::select! {
                    () = runner::stopped(&mut shutdown), if !stopping => {
                        stopping = true;
                        let _ = stop.send(true);
                    }
                    joined = topics.join_next() => {
                        if joined.is_none() {
                            break;
                        }
                        if status.snapshot().state == ConnectorState::Failed {
                            stopping = true;
                            let _ = stop.send(true);
                        }
                    }
                }
            }
            match Arc::try_unwrap(sink) {
                Ok(sink) => {
                    if let Err(error) = sink.close(Duration::from_secs(10)).await {
                        tracing::warn!(connector = %key, %error, "closing the sink failed");
                    }
                }
                // Every topic task has ended, so this cannot happen; dropping the last
                // handle would close the sink in the background anyway.
                Err(sink) => drop(sink),
            }
        }
    }
}
