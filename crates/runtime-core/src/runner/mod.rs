//! The pipelines: a source runner (plugin -> Iggy) and a sink runner (Iggy -> plugin).
//!
//! Delivery is at least once. A source batch is accepted (its cursor moves) only after
//! Iggy stored it on every configured stream and its state was persisted; otherwise it
//! is rejected, and the source produces it again after a pause. A sink stores its
//! consumer offset only after every message up to it was handled: accepted by the
//! plugin, or passed to the error policy (`skip` or `dead_letter`, the dead letter
//! stored by Iggy first). Retryable failures are retried with exponential backoff;
//! under the `fail` policy, or when the plugin panicked, the connector is `failed` with
//! the error and nothing after the last handled message is committed.
//!
//! - this file: one run of a connector ([`ConnectorRun`]): its schemas, its
//!   connections to Iggy, opening and closing its plugin instance;
//! - `source/`: the source pipeline and its four stages;
//! - `sink.rs`: the sink pipeline, one task per (stream, topic);
//! - `error_policy.rs`: what happens to a message that keeps failing;
//! - `retry.rs`: retries with exponential backoff;
//! - `report.rs`: what `verbose` and `benchmark` log per batch.

mod error_policy;
mod report;
mod retry;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use config_provider::{ConnectorConfig, SinkConfig, SourceConfig};
use connector_sdk::{HeaderKind, Message, OwnedHeader};
use plugin_host::{OpenOptions, Plugin, SourceBatch};
use transforms::{Codec, StreamPayload, TransformChain};

use crate::RuntimeContext;
use crate::bus::{MessageBus, OutgoingMessage};
use crate::control::Control;
use crate::resume::{Ledger, resume_state};
use crate::status::StatusCell;
use report::BatchReport;

pub use retry::RetryPolicy;

/// How long closing a plugin instance may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One run of a connector, from reading its schemas to closing its plugin instance:
/// what every part of the run needs, handed down as one value.
pub(crate) struct ConnectorRun<'a> {
    pub(crate) config: &'a ConnectorConfig,
    pub(crate) chain: &'a TransformChain,
    pub(crate) plugin: &'a Plugin,
    pub(crate) context: &'a RuntimeContext,
    /// The connector's `[retry]`, or the runtime's.
    pub(crate) retry: RetryPolicy,
    pub(crate) status: &'a StatusCell,
}

/// What a connector run reaches Iggy through.
struct Connection {
    /// The connector's own connection, or the runtime's.
    bus: Arc<dyn MessageBus>,
    /// Where a sink reads ahead (a second connection, or `bus`).
    reader: Arc<dyn MessageBus>,
}

impl ConnectorRun<'_> {
    fn key(&self) -> &str {
        &self.config.common().key
    }

    /// Reads the streams' schemas, opens the connector's plugin instance and runs it
    /// until it stops or fails, over a connection to Iggy of its own when the bus
    /// offers one.
    pub(crate) async fn run(&self, mut control: Control) {
        // Before anything is opened: a bad schema file fails the connector at once.
        let codecs = match connector_codecs(self.config) {
            Ok(codecs) => codecs,
            Err(error) => {
                self.status.config_error(error);
                return;
            }
        };
        let budget = self.config.common().memory_budget;
        self.status
            .budget()
            .set_limit(budget.unwrap_or(self.context.memory_budget));
        let Ok(own) = self.own_connection(&mut control).await else {
            return;
        };
        // A sink reads ahead on a second connection, so that its reads do not queue
        // behind its offset stores (requests on one connection are answered one at a
        // time).
        let reader = match self.config {
            ConnectorConfig::Sink(_) => match self.own_connection(&mut control).await {
                Ok(reader) => reader,
                Err(()) => {
                    if let Some(bus) = own {
                        bus.close().await;
                    }
                    return;
                }
            },
            ConnectorConfig::Source(_) => None,
        };
        let bus = own.clone().unwrap_or_else(|| self.context.bus.clone());
        let connection = Connection {
            reader: reader.clone().unwrap_or_else(|| bus.clone()),
            bus,
        };
        match self.config {
            ConnectorConfig::Source(source) => {
                self.run_source(source, codecs, &connection, control).await;
            }
            ConnectorConfig::Sink(sink) => {
                self.run_sink(sink, codecs, &connection, control).await;
            }
        }
        for bus in own.into_iter().chain(reader) {
            bus.close().await;
        }
    }

    /// A connection of the connector's own when the bus offers one (`None`: share the
    /// runtime's); `Err` when it cannot be made, and then the connector has failed, or
    /// when a stop came first (a server that never answers must not hold a stop up).
    async fn own_connection(
        &self,
        control: &mut Control,
    ) -> Result<Option<Arc<dyn MessageBus>>, ()> {
        let key = self.key();
        let made = tokio::select! {
            made = self.context.bus.for_connector(key) => made,
            () = control.stopping() => return Err(()),
        };
        made.map_err(|error| {
            tracing::error!(connector = %key, %error, "cannot connect to Iggy");
            self.status.fail(format!("cannot connect to Iggy: {error}"));
        })
    }

    /// Resumes the source's state, opens the plugin instance and runs the source
    /// pipeline until it stops or fails.
    async fn run_source(
        &self,
        config: &SourceConfig,
        codecs: Vec<Codec>,
        connection: &Connection,
        control: Control,
    ) {
        let (key, context, status) = (self.key(), self.context, self.status);
        let bus = connection.bus.as_ref();
        let resumed = resume_state(key, &context.state, bus, self.retry, status).await;
        let state = match resumed {
            Ok(state) => state,
            Err(error) => {
                status.fail(format!("cannot read the source state: {error}"));
                return;
            }
        };
        if let Err(error) = context.state.prepare(key).await {
            status.config_error(format!("cannot create the source state files: {error}"));
            return;
        }
        let plugin_config = crate::typed_plugin_config(self.plugin, self.config).to_string();
        let opened = self
            .plugin
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
                tracing::error!(connector = %key, kind = %self.config.kind(), %error, "cannot open");
                status.fail(error.to_string());
                return;
            }
        };
        tracing::info!(connector = %key, kind = %self.config.kind(), version = config.common.version, "started");
        let pipeline = source::SourcePipeline {
            config,
            chain: self.chain,
            codecs,
            bus,
            state: &context.state,
            ledger: config.verified_resume.then(|| Ledger::new(state.clone())),
            retry: self.retry,
            status,
            report: BatchReport::new(config.common.verbose, config.common.benchmark),
        };
        pipeline.run(&source, control).await;
        if let Err(error) = source.close(CLOSE_TIMEOUT).await {
            tracing::warn!(connector = %key, %error, "closing the source failed");
        }
    }

    /// Opens the plugin instance and runs the sink pipelines until they stop or one
    /// fails.
    async fn run_sink(
        &self,
        config: &SinkConfig,
        codecs: Vec<Codec>,
        connection: &Connection,
        control: Control,
    ) {
        let key = self.key();
        let plugin_config = crate::typed_plugin_config(self.plugin, self.config).to_string();
        let opened = self
            .plugin
            .open_sink(key, &plugin_config, OpenOptions::default())
            .await;
        let instance = match opened {
            Ok(sink) => Arc::new(sink),
            Err(error) => {
                tracing::error!(connector = %key, kind = %self.config.kind(), %error, "cannot open");
                self.status.fail(error.to_string());
                return;
            }
        };
        tracing::info!(connector = %key, kind = %self.config.kind(), version = config.common.version, "started");
        sink::run_sink(self, config, codecs, &instance, connection, control).await;
        match Arc::try_unwrap(instance) {
            Ok(instance) => {
                if let Err(error) = instance.close(CLOSE_TIMEOUT).await {
                    tracing::warn!(connector = %key, %error, "closing the sink failed");
                }
            }
            // Every topic task has ended, so this cannot happen; dropping the last
            // handle would close the sink in the background anyway.
            Err(instance) => drop(instance),
        }
    }
}

/// The codecs of a connector's streams (reading their schema files), or the first
/// problem, naming its stream.
pub(crate) fn connector_codecs(config: &ConnectorConfig) -> Result<Vec<Codec>, String> {
    let codec = |name: &str, payload: &StreamPayload| {
        payload
            .codec()
            .map_err(|error| format!("stream {name}: {error}"))
    };
    match config {
        ConnectorConfig::Source(source) => source
            .streams
            .iter()
            .map(|stream| codec(&stream.stream, &stream.payload))
            .collect(),
        ConnectorConfig::Sink(sink) => sink
            .streams
            .iter()
            .map(|stream| codec(&stream.stream, &stream.payload))
            .collect(),
    }
}

/// A plugin's batch as produced: ids (0 lets the client pick), headers and payloads.
/// The payloads are lent from the plugin (see `SourceBatch::payloads`), so every one
/// must be dropped before the batch is settled: the pipeline consumes them in the send.
pub(super) fn outgoing_batch(batch: &SourceBatch<'_>) -> Vec<OutgoingMessage> {
    batch
        .messages()
        .iter()
        .zip(batch.payloads())
        .map(|(message, payload)| outgoing(message, payload))
        .collect()
}

/// A message as produced, with its payload copied already.
pub(super) fn outgoing(message: &Message<'_>, payload: Bytes) -> OutgoingMessage {
    OutgoingMessage {
        id: (message.id() != 0).then(|| message.id()),
        headers: owned_headers(message),
        payload,
    }
}

/// The headers of a plugin's message, owned (headers of a kind this runtime does not
/// know are left out).
pub(super) fn owned_headers(message: &Message<'_>) -> Vec<OwnedHeader> {
    message
        .headers()
        .filter_map(|header| {
            Some(OwnedHeader {
                key: header.key.to_owned(),
                kind: HeaderKind::from_code(header.kind)?,
                value: header.value.to_vec(),
            })
        })
        .collect()
}
