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

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use config_provider::{
    ConnectorConfig, DeadLetterTarget, ErrorPolicy, SinkConfig, SinkStream, SourceConfig,
};
use connector_sdk::{HeaderKind, Message, OwnedHeader, Schema};
use plugin_host::{
    BatchSource, CallError, CallErrorKind, MessageMeta, OpenOptions, Plugin, SinkBatch,
    SinkBatchBuffers, SinkBatchBuilder, SinkInstance, SourceBatch, SourceInstance,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, mpsc, watch};
use tokio::task::JoinSet;
use transforms::{AvroSchema, Codec, ProtoSchema, TransformChain};

use crate::bus::{BusError, BusErrorKind, MessageBus, OutgoingMessage, Polled, PreparedSend};
use crate::control::{Control, Desired};
use crate::resume::{Ledger, resume_state};
use crate::shape;
use crate::stall::{GroupWatch, Measures, StallPolicy};
use crate::state::StateStore;
use crate::status::{ConnectorState, StatusCell};
use crate::{RuntimeContext, dead_letter};

/// What a `[[streams]]` entry says about its payloads.
struct StreamSchema<'a> {
    name: &'a str,
    schema: Schema,
    avro_schema_json: &'a Option<String>,
    avro_schema_path: &'a Option<String>,
    proto_descriptor_set: &'a Option<String>,
    proto_message_type: &'a Option<String>,
}

/// The [`StreamSchema`] of a sink or source stream (their fields have the same names).
macro_rules! stream_schema {
    ($stream:expr) => {
        StreamSchema {
            name: &$stream.stream,
            schema: $stream.schema,
            avro_schema_json: &$stream.avro_schema_json,
            avro_schema_path: &$stream.avro_schema_path,
            proto_descriptor_set: &$stream.proto_descriptor_set,
            proto_message_type: &$stream.proto_message_type,
        }
    };
}

/// How long closing a plugin instance may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How failed calls are retried before the error policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: usize,
    /// Pause before the first retry; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from(config_provider::ConnectorRetry::default())
    }
}

impl RetryPolicy {
    /// The pause after the `failures`-th consecutive failure.
    pub(crate) fn backoff(&self, failures: usize) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Runs `call` until it succeeds, fails in a way `retryable` refuses, or the
    /// attempts run out, counting retries.
    pub(crate) async fn run_when<T, E, F, Fut>(
        &self,
        status: &StatusCell,
        what: &str,
        retryable: impl FnMut(&E) -> bool,
        call: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.attempts.saturating_sub(1));
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(retryable)
            .notify(|error: &E, pause: Duration| {
                tracing::warn!(what, %error, ?pause, "retrying");
                status.retried(error.to_string());
            })
            .await
    }

    /// [`RetryPolicy::run_when`] for calls whose every failure may be retried.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        status: &StatusCell,
        what: &str,
        call: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_when(status, what, |_| true, call).await
    }
}

/// Reads the streams' schemas, opens the connector's plugin instance and runs it until
/// it stops or fails, over a connection to Iggy of its own when the bus offers one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_once(
    config: &ConnectorConfig,
    chain: &TransformChain,
    plugin: &Plugin,
    context: &RuntimeContext,
    retry: RetryPolicy,
    status: &StatusCell,
    control: Control,
) {
    let key = config.key();
    // Before anything is opened: a bad schema file fails the connector at once.
    let codecs = match connector_codecs(config) {
        Ok(codecs) => codecs,
        Err(error) => {
            status.fail(error);
            return;
        }
    };
    let Ok(own) = own_connection(context, key, status).await else {
        return;
    };
    // A sink reads ahead on a second connection, so that its reads do not queue behind
    // its offset stores (requests on one connection are answered one at a time).
    let reader = match config {
        ConnectorConfig::Sink(_) => match own_connection(context, key, status).await {
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
    let own_context;
    let context = match &own {
        Some(bus) => {
            own_context = RuntimeContext {
                bus: bus.clone(),
                ..context.clone()
            };
            &own_context
        }
        None => context,
    };
    let connection = Connection {
        context,
        reader: reader.clone().unwrap_or_else(|| context.bus.clone()),
    };
    run_connector(
        config,
        chain,
        codecs,
        plugin,
        &connection,
        retry,
        status,
        control,
    )
    .await;
    for bus in own.into_iter().chain(reader) {
        bus.close().await;
    }
}

/// A connection of the connector's own when the bus offers one (`None`: share the
/// runtime's); `Err` when it cannot be made, and then the connector has failed.
async fn own_connection(
    context: &RuntimeContext,
    key: &str,
    status: &StatusCell,
) -> Result<Option<Arc<dyn MessageBus>>, ()> {
    context.bus.for_connector(key).await.map_err(|error| {
        tracing::error!(connector = %key, %error, "cannot connect to Iggy");
        status.fail(format!("cannot connect to Iggy: {error}"));
    })
}

/// What a connector run reaches Iggy through.
struct Connection<'a> {
    /// The runtime's context, with the connector's own bus.
    context: &'a RuntimeContext,
    /// Where a sink reads ahead (a second connection, or the connector's bus).
    reader: Arc<dyn MessageBus>,
}

/// [`run_once`] once the codecs and the connections are there.
#[allow(clippy::too_many_arguments)]
async fn run_connector(
    config: &ConnectorConfig,
    chain: &TransformChain,
    codecs: Vec<Codec>,
    plugin: &Plugin,
    connection: &Connection<'_>,
    retry: RetryPolicy,
    status: &StatusCell,
    control: Control,
) {
    let context = connection.context;
    let key = config.key();
    let kind = config.kind();
    let plugin_config = config.plugin_config().to_string();
    match config {
        ConnectorConfig::Source(source_config) => {
            let resumed =
                resume_state(key, &context.state, context.bus.as_ref(), retry, status).await;
            let state = match resumed {
                Ok(state) => state,
                Err(error) => {
                    status.fail(format!("cannot read the source state: {error}"));
                    return;
                }
            };
            if let Err(error) = context.state.prepare(key).await {
                status.fail(format!("cannot create the source state files: {error}"));
                return;
            }
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
            let pipeline = SourcePipeline {
                config: source_config,
                chain,
                codecs,
                bus: context.bus.as_ref(),
                state: &context.state,
                ledger: source_config
                    .verified_resume
                    .then(|| Ledger::new(state.clone())),
                retry,
                status,
            };
            pipeline.run(&source, control).await;
            if let Err(error) = source.close(CLOSE_TIMEOUT).await {
                tracing::warn!(connector = %key, %error, "closing the source failed");
            }
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
            run_sink(
                sink_config,
                chain,
                codecs,
                &sink,
                connection,
                retry,
                status,
                control,
            )
            .await;
            match Arc::try_unwrap(sink) {
                Ok(sink) => {
                    if let Err(error) = sink.close(CLOSE_TIMEOUT).await {
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

/// Most source batches in flight (polled, not yet settled) per connector, whatever the
/// plugin allows: bounds the memory one source can hold.
const MAX_SOURCE_BATCHES_IN_FLIGHT: u32 = 16;

/// One source's loop: poll, produce everywhere, persist state, accept.
///
/// Four stages run concurrently in one task, joined by bounded queues: the poller asks
/// the plugin for batches and shapes them, the builder makes them into sends ready for
/// the bus (while the previous send is in flight), the sender produces them to Iggy
/// in order, the committer persists the newest state of what Iggy stored (once for all
/// the batches that are ready) and accepts them in order; with `verified_resume`, the
/// builder saves the state with each unit's sends as pending before the unit goes (see
/// `resume.rs`) and the committer only accepts. As many batches are in
/// flight as the plugin allows unsettled (see `Source::MAX_UNSETTLED_BATCHES`), at
/// most [`MAX_SOURCE_BATCHES_IN_FLIGHT`]; with one, the stages take turns as a plain
/// loop would. The builder merges batches that are in flight into one send while it
/// is short of `batch_length` (and `max_send_bytes`), waiting up to `linger_time` for
/// the next. The first failure halts the round: what Iggy stored before it is
/// committed, the failed batch and every later one are rejected (the plugin rewinds to
/// the failed one), and the round starts again after a backoff.
struct SourcePipeline<'a> {
    config: &'a SourceConfig,
    chain: &'a TransformChain,
    /// Each stream's codec, in stream order.
    codecs: Vec<Codec>,
    bus: &'a dyn MessageBus,
    state: &'a StateStore,
    /// With `verified_resume`: the sends saved as pending (the state is saved before
    /// each send, not after).
    ledger: Option<Ledger>,
    retry: RetryPolicy,
    status: &'a StatusCell,
}

/// Why a round of source batches ended early.
#[derive(Debug)]
enum Halt {
    /// The batch may succeed when produced again: reject and retry after a backoff.
    Retry(String),
    /// Retrying cannot help: the connector fails with this error.
    Fatal(String),
}

/// How a round of source batches ended.
enum Round {
    /// Stop was requested (or the runtime is gone); everything in flight was settled.
    Stopped,
    /// Halted; `accepted` tells whether any batch was accepted before.
    Halted { halt: Halt, accepted: bool },
}

/// A batch the poller took from the plugin, on its way to the sender and committer.
struct InFlight<'s> {
    batch: SourceBatch<'s>,
    /// The shaped messages, or why the batch cannot be produced at all.
    prepared: Result<Prepared, Halt>,
    received: Instant,
    /// Whether Iggy stored it (set by the sender).
    stored: bool,
    /// For the last batch of a send Iggy stored: the send's place among those allowed
    /// beyond the saved state (set by the sender, released once the state is written).
    unsaved: Option<OwnedSemaphorePermit>,
}

impl SourcePipeline<'_> {
    async fn run(&self, source: &SourceInstance, mut control: Control) {
        let (status, retry) = (self.status, self.retry);
        for stream in &self.config.streams {
            let ensured = retry
                .run(status, "create topic", || {
                    self.bus.ensure_topic(&stream.stream, &stream.topic)
                })
                .await;
            if let Err(error) = ensured {
                status.fail(format!(
                    "cannot reach topic {}/{}: {error}",
                    stream.stream, stream.topic
                ));
                return;
            }
        }
        status.set_state(ConnectorState::Running);
        // Topics known to exist; `route` may name others, created on first use.
        let mut ensured: HashSet<(String, String)> = self
            .config
            .streams
            .iter()
            .map(|stream| (stream.stream.clone(), stream.topic.clone()))
            .collect();
        let depth = source
            .plugin()
            .max_unsettled_batches()
            .clamp(1, MAX_SOURCE_BATCHES_IN_FLIGHT) as usize;
        // Consecutive rounds that ended without delivering a batch.
        let mut failures = 0;
        loop {
            let round = self
                .run_round(source, &mut control, depth, &mut ensured)
                .await;
            if let Some(ledger) = &self.ledger {
                ledger.forget_pending();
            }
            let (halt, accepted) = match round {
                Round::Stopped => {
                    self.save_final_state().await;
                    return;
                }
                Round::Halted { halt, accepted } => (halt, accepted),
            };
            let error = match halt {
                Halt::Fatal(reason) => {
                    status.fail(reason);
                    return;
                }
                Halt::Retry(error) => error,
            };
            if accepted {
                failures = 0;
            }
            failures += 1;
            if failures >= retry.attempts {
                status.fail(format!("{error} ({failures} attempts)"));
                return;
            }
            tracing::warn!(connector = %self.config.key, %error, attempt = failures, "batch rejected; retrying");
            status.retried(error);
            tokio::select! {
                () = control.stopping() => return,
                () = tokio::time::sleep(retry.backoff(failures)) => {}
            }
        }
    }

    /// Polls, produces and commits batches until stop is requested or one fails.
    async fn run_round<'s>(
        &self,
        source: &'s SourceInstance,
        control: &mut Control,
        depth: usize,
        ensured: &mut HashSet<(String, String)>,
    ) -> Round {
        let status = self.status;
        // The first failure; every stage stops taking new work once it is set.
        let halted: std::sync::Mutex<Option<Halt>> = std::sync::Mutex::new(None);
        let halt = |why: Halt| {
            if let Ok(mut halted) = halted.lock()
                && halted.is_none()
            {
                *halted = Some(why);
            }
        };
        let is_halted = || halted.lock().map_or(true, |halted| halted.is_some());
        let unsettled = Semaphore::new(depth);
        let (to_send, mut sending) = mpsc::channel::<(InFlight<'s>, SemaphorePermit<'_>)>(depth);
        let (to_deliver, mut delivering) = mpsc::channel::<Unit<'s, SemaphorePermit<'_>>>(1);
        let (to_commit, mut committing) =
            mpsc::channel::<(InFlight<'s>, SemaphorePermit<'_>)>(depth);
        let mut accepted = false;
        // Whether the sender has a send in flight (its batches reach the committer soon).
        let send_in_flight = AtomicBool::new(false);
        // One permit per send Iggy may hold beyond the saved state
        // (`max_unsaved_sends`): the sender takes one before each send, it travels with
        // the send's last batch, and the committer lets it go once the state covering
        // it is written. So a crash makes the source produce again at most that many.
        let max_unsaved = self.config.max_unsaved_sends.max(1) as usize;
        let unsaved_sends = Arc::new(Semaphore::new(max_unsaved));

        let poller = async {
            loop {
                let permit = tokio::select! {
                    () = control.stopping() => break,
                    permit = unsettled.acquire() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                if is_halted() || !control.proceed(status).await {
                    break;
                }
                let polled = tokio::select! {
                    () = control.stopping() => break,
                    polled = source.poll() => polled,
                };
                let batch = match polled {
                    Ok(batch) => batch,
                    Err(error) if error.is_retryable() => {
                        drop(permit);
                        status.retried(error.to_string());
                        tokio::select! {
                            () = control.stopping() => break,
                            () = tokio::time::sleep(self.retry.backoff(1)) => continue,
                        }
                    }
                    Err(error) => {
                        halt(Halt::Fatal(format!("poll failed: {error}")));
                        break;
                    }
                };
                let received = Instant::now();
                let messages = outgoing_batch(&batch);
                let bytes: usize = messages.iter().map(|message| message.payload.len()).sum();
                status.received(messages.len(), bytes);
                let prepared = match batch.schema() {
                    Ok(schema) => {
                        let prepared = self.prepare(schema, messages);
                        status.filtered(prepared.filtered);
                        Ok(prepared)
                    }
                    Err(error) => Err(Halt::Fatal(format!(
                        "the batch declares no usable schema: {error}"
                    ))),
                };
                let in_flight = InFlight {
                    batch,
                    prepared,
                    received,
                    stored: false,
                    unsaved: None,
                };
                if to_send.send((in_flight, permit)).await.is_err() {
                    break;
                }
            }
            drop(to_send);
        };

        // The builder merges batches into sends and converts them for the bus while
        // the sender's previous send is in flight; the sender only sends.
        let builder = async {
            let (fill, fill_bytes, linger) = self.send_limits();
            while let Some(first) = sending.recv().await {
                let mut taken = vec![first];
                // Small batches go out together: take those that are ready, and wait up
                // to `linger_time` for more while the send is short of `batch_length`
                // (never for more than may be unsettled, or the poller could not add).
                if !is_halted() && taken[0].0.prepared.is_ok() {
                    let deadline = tokio::time::Instant::now() + linger;
                    while taken.len() < depth {
                        let (count, bytes) = pending(&taken);
                        let short = count < fill && bytes < fill_bytes;
                        // With a ledger, a full unit still takes the batches that are
                        // ready (cut into several sends): one state write covers them,
                        // so the longer a write takes, the fewer there are.
                        if !short && self.ledger.is_none() {
                            break;
                        }
                        let next = match sending.try_recv() {
                            Ok(next) => Some(next),
                            Err(TryRecvError::Disconnected) => None,
                            Err(TryRecvError::Empty) if linger.is_zero() || !short => None,
                            Err(TryRecvError::Empty) => tokio::select! {
                                next = sending.recv() => next,
                                () = tokio::time::sleep_until(deadline) => None,
                            },
                        };
                        let Some(next) = next else { break };
                        let usable = next.0.prepared.is_ok();
                        taken.push(next);
                        if !usable {
                            break;
                        }
                    }
                }
                let usable = taken
                    .iter()
                    .take_while(|(in_flight, _)| in_flight.prepared.is_ok())
                    .count();
                let mut marked = None;
                let (failed, sends, halt_after) = if is_halted() {
                    (Vec::new(), Ok(Vec::new()), None)
                } else {
                    let merged = take_messages(
                        taken[..usable]
                            .iter_mut()
                            .filter_map(|(in_flight, _)| in_flight.prepared.as_mut().ok()),
                    );
                    // The batch after the usable ones cannot be produced: the round
                    // halts once they are sent.
                    let halt_after = taken.get_mut(usable).and_then(|(in_flight, _)| {
                        std::mem::replace(&mut in_flight.prepared, Ok(Prepared::default())).err()
                    });
                    let single_destination = merged.groups.len() == 1;
                    let counts = merged.counts;
                    let mut chunks = self.cut_sends(merged.groups);
                    let mut record = None;
                    if let Some(ledger) = &self.ledger {
                        let states = completed_batches(&chunks, &counts, single_destination)
                            .into_iter()
                            .map(|completed| {
                                completed.and_then(|batches| newest_state(&taken[..batches]))
                            })
                            .collect();
                        if let Some((unit, saved)) = ledger.mark(&mut chunks, states) {
                            marked = Some(unit);
                            record = Some(saved);
                        }
                    }
                    let mut sends = self.convert_sends(chunks, ensured).await;
                    // Saved while the previous send is in flight: this one may go only
                    // once a restart would know to look for it.
                    let saving = record.filter(|_| sends.is_ok());
                    if let Some(record) = saving
                        && let Err(error) = self.state.write_saved(&self.config.key, record).await
                    {
                        sends = Err(Halt::Retry(format!(
                            "cannot persist the source state: {error}"
                        )));
                    }
                    (merged.failed, sends, halt_after)
                };
                let unit = Unit {
                    taken,
                    usable,
                    failed,
                    sends,
                    halt_after,
                    marked,
                };
                if to_deliver.send(unit).await.is_err() {
                    break;
                }
            }
            drop(to_deliver);
        };

        let sender = async {
            while let Some(unit) = delivering.recv().await {
                let Unit {
                    mut taken,
                    usable,
                    failed,
                    sends,
                    halt_after,
                    marked,
                } = unit;
                // (The semaphore is never closed, so this always waits for a permit.)
                // With a ledger, the state was saved with the send before it came here.
                let unsaved = match &self.ledger {
                    Some(_) => None,
                    None => unsaved_sends.clone().acquire_owned().await.ok(),
                };
                if !is_halted() {
                    send_in_flight.store(true, Ordering::Relaxed);
                    let delivered = match sends {
                        Ok(sends) => self.deliver(failed, sends).await,
                        Err(why) => Err(why),
                    };
                    send_in_flight.store(false, Ordering::Relaxed);
                    match delivered {
                        Ok(()) => {
                            if let Some(ledger) = &self.ledger {
                                ledger.stored(marked, newest_state(&taken[..usable]));
                            }
                            for (in_flight, _) in &mut taken[..usable] {
                                in_flight.stored = true;
                            }
                            if let Some((last, _)) = taken[..usable].last_mut() {
                                last.unsaved = unsaved;
                            }
                        }
                        Err(why) => halt(why),
                    }
                    if let Some(why) = halt_after {
                        halt(why);
                    }
                } else {
                    // Unsent, their payloads (maybe lent from the plugin) go now: the
                    // committer's settle waits for them.
                    drop((failed, sends));
                }
                for item in taken {
                    if to_commit.send(item).await.is_err() {
                        break;
                    }
                }
            }
            drop(to_commit);
        };

        let committer = async {
            let mut ready = Vec::with_capacity(depth);
            // Set when the plugin refused an accept: nothing after it is accepted.
            let mut refused = false;
            while let Some(first) = committing.recv().await {
                ready.push(first);
                while let Ok(more) = committing.try_recv() {
                    ready.push(more);
                }
                // Group commit: while a send is in flight, its batches will be ready as
                // soon as Iggy answers, so wait for them and let one state write cover
                // both, holding back at most half of what may be unsettled (the poller
                // keeps the rest to stay ahead of the sender). An idle sender means
                // nothing is coming: write at once.
                while ready.len() < depth / 2
                    && self.ledger.is_none()
                    && send_in_flight.load(Ordering::Relaxed)
                    && ready.last().is_some_and(|(in_flight, _)| in_flight.stored)
                    && !is_halted()
                {
                    let Some(more) = committing.recv().await else {
                        break;
                    };
                    ready.push(more);
                    while let Ok(more) = committing.try_recv() {
                        ready.push(more);
                    }
                }
                // Batches are in order and a halt rejects everything after it, so the
                // stored ones come first; their newest state covers them all.
                let mut stored = ready
                    .iter()
                    .take_while(|(in_flight, _)| in_flight.stored)
                    .count();
                // With a ledger the state went to disk with the sends already.
                let state = match self.ledger {
                    Some(_) => None,
                    None => ready[..stored]
                        .iter()
                        .rev()
                        .find_map(|(in_flight, _)| in_flight.batch.state()),
                };
                if let Some(state) = state
                    && let Err(error) = self.state.write(&self.config.key, state.to_vec()).await
                {
                    halt(Halt::Retry(format!(
                        "cannot persist the source state: {error}"
                    )));
                    stored = 0;
                }
                // Written (or failed, which halts the round): the sends may go on.
                for (in_flight, _) in &mut ready {
                    in_flight.unsaved = None;
                }
                // One hand-over to the plugin for the whole group (in order); the
                // permits go back once the plugin has answered.
                let mut settling = Vec::with_capacity(ready.len());
                let mut outcomes = Vec::with_capacity(ready.len());
                for (index, (in_flight, permit)) in ready.drain(..).enumerate() {
                    let InFlight {
                        batch,
                        prepared,
                        received,
                        ..
                    } = in_flight;
                    // Rejecting rewinds the source (to the first of those rejected).
                    let accept = index < stored && !refused;
                    settling.push((batch, accept));
                    // Only the counts are kept: payloads a halt left unsent are lent
                    // from the plugin, and the settle waits until they are dropped.
                    let counts = prepared
                        .ok()
                        .map(|prepared| (prepared.count, prepared.bytes));
                    outcomes.push((accept, counts, received, permit));
                }
                let answers = source.settle_all(settling).await;
                for ((accept, counts, received, permit), answer) in
                    outcomes.into_iter().zip(answers)
                {
                    // A reject's answer changes nothing: the round ends and the source
                    // is retried or closed.
                    if accept {
                        match answer {
                            Ok(()) => {
                                accepted = true;
                                if let Some((count, bytes)) = counts {
                                    status.delivered(count, bytes, received.elapsed());
                                }
                            }
                            Err(error) => {
                                if !refused {
                                    halt(Halt::Fatal(format!(
                                        "the source refused the accept: {error}"
                                    )));
                                }
                                refused = true;
                            }
                        }
                    }
                    drop(permit);
                }
            }
        };

        tokio::join!(poller, builder, sender, committer);
        match halted.into_inner().ok().flatten() {
            Some(halt) => Round::Halted { halt, accepted },
            None => Round::Stopped,
        }
    }

    /// On a stop with `verified_resume`: saves the confirmed state without pending
    /// sends, so the next start need not ask Iggy (a failure only means it will).
    async fn save_final_state(&self) {
        let Some(record) = self.ledger.as_ref().and_then(Ledger::final_record) else {
            return;
        };
        if let Err(error) = self.state.write_saved(&self.config.key, record).await {
            tracing::warn!(connector = %self.config.key, %error, "cannot save the final source state; the next start looks for the last sends in Iggy");
        }
    }

    /// When a send is full (messages, payload bytes), and how long it may wait to
    /// fill: the smallest `batch_length`, `max_send_bytes` and `linger_time` of the
    /// connector's streams.
    fn send_limits(&self) -> (usize, usize, Duration) {
        let streams = &self.config.streams;
        let fill = streams
            .iter()
            .map(|stream| stream.batch_length.max(1) as usize)
            .min()
            .unwrap_or(1);
        let fill_bytes = streams
            .iter()
            .filter_map(|stream| stream.max_send_bytes)
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX))
            .min()
            .unwrap_or(usize::MAX);
        let linger = streams
            .iter()
            .map(|stream| stream.linger_time.get())
            .min()
            .unwrap_or_default();
        (fill, fill_bytes, linger)
    }

    /// Hands the failed messages to the error policy, then makes the sends, in order;
    /// the first failure ends it (the batches are then rejected and produced again
    /// whole).
    async fn deliver(&self, failed: Failed, sends: Sends) -> Result<(), Halt> {
        for (message, destination, error) in failed {
            let origin = Origin {
                connector: &self.config.key,
                stream: &destination.0,
                topic: &destination.1,
                partition: None,
                offset: None,
            };
            apply_error_policy(
                self.config.error_policy,
                self.config.dead_letter.as_ref(),
                &origin,
                message,
                &error,
                self.bus,
                self.retry,
                self.status,
            )
            .await
            // The same message would fail again: no retry, the source fails.
            .map_err(Halt::Fatal)?;
        }
        for ((stream, topic), prepared) in sends {
            if let Err(error) = self.bus.send_prepared(&stream, &topic, prepared).await {
                return Err(Halt::Retry(format!(
                    "sending to {stream}/{topic} failed: {error}"
                )));
            }
        }
        Ok(())
    }

    /// Shapes a batch for its streams: decoded with the plugin's schema, transformed,
    /// encoded with each stream's schema, grouped by destination (stream, topic).
    fn prepare(&self, from: Schema, messages: Vec<OutgoingMessage>) -> Prepared {
        let streams = &self.config.streams;
        let schemas = &self.codecs;
        // A plugin declaring Avro or Protobuf writes with the first such stream's schema.
        let from = Codec::for_schema(from, schemas);
        let mut prepared = Prepared {
            count: messages.len(),
            bytes: messages.iter().map(|message| message.payload.len()).sum(),
            ..Prepared::default()
        };
        if !shape::needed(self.chain, &from, schemas) {
            // Untouched: the last stream takes the batch, the others get copies.
            let mut messages = Some(messages);
            for (index, stream) in streams.iter().enumerate() {
                let batch = if index + 1 == streams.len() {
                    messages.take().unwrap_or_default()
                } else {
                    messages.clone().unwrap_or_default()
                };
                prepared
                    .groups
                    .push(((stream.stream.clone(), stream.topic.clone()), batch));
            }
            return prepared;
        }
        let (mut count, mut bytes) = (0, 0);
        for message in messages {
            match shape::shape(self.chain, &from, message.payload.clone(), schemas) {
                Ok(Some((payloads, routed))) => {
                    count += 1;
                    bytes += payloads.first().map_or(0, Bytes::len);
                    for (stream, payload) in streams.iter().zip(payloads) {
                        let destination = (
                            stream.stream.clone(),
                            routed.clone().unwrap_or_else(|| stream.topic.clone()),
                        );
                        let shaped = OutgoingMessage {
                            id: message.id,
                            headers: message.headers.clone(),
                            payload,
                        };
                        match prepared
                            .groups
                            .iter_mut()
                            .find(|(to, _)| *to == destination)
                        {
                            Some((_, group)) => group.push(shaped),
                            None => prepared.groups.push((destination, vec![shaped])),
                        }
                    }
                }
                Ok(None) => prepared.filtered += 1,
                Err(error) => {
                    let destination = streams
                        .first()
                        .map(|stream| (stream.stream.clone(), stream.topic.clone()))
                        .unwrap_or_default();
                    prepared.failed.push((message, destination, error));
                }
            }
        }
        prepared.count = count;
        prepared.bytes = bytes;
        prepared
    }

    /// Cuts each destination's messages into sends of at most the stream's
    /// `batch_length` messages and `max_send_bytes` payload bytes (but always one
    /// message).
    fn cut_sends(&self, groups: Vec<Destined>) -> Chunks {
        let mut sends = Vec::new();
        for ((stream, topic), segments) in groups {
            let configured = self
                .config
                .streams
                .iter()
                .find(|configured| configured.stream == stream);
            let limit = configured.map_or(usize::MAX, |configured| {
                configured.batch_length.max(1) as usize
            });
            let max_bytes = configured
                .and_then(|configured| configured.max_send_bytes)
                .map_or(usize::MAX, |bytes| {
                    usize::try_from(bytes).unwrap_or(usize::MAX)
                });
            for chunk in cut(segments, limit, max_bytes) {
                sends.push(((stream.clone(), topic.clone()), chunk));
            }
        }
        sends
    }

    /// Converts cut sends for the bus.
    async fn convert_sends(
        &self,
        chunks: Chunks,
        ensured: &mut HashSet<(String, String)>,
    ) -> Result<Sends, Halt> {
        let mut sends = Vec::with_capacity(chunks.len());
        for ((stream, topic), chunk) in chunks {
            // A routed topic is created on first use, before its send is made ready
            // (making it ready asks Iggy for the topic's partitions).
            if !ensured.contains(&(stream.clone(), topic.clone())) {
                self.bus
                    .ensure_topic(&stream, &topic)
                    .await
                    .map_err(|error| {
                        Halt::Retry(format!(
                            "cannot create routed topic {stream}/{topic}: {error}"
                        ))
                    })?;
                ensured.insert((stream.clone(), topic.clone()));
            }
            let prepared = self
                .bus
                .prepare_send(&stream, &topic, chunk)
                .await
                .map_err(|error| {
                    Halt::Retry(format!("sending to {stream}/{topic} failed: {error}"))
                })?;
            sends.push(((stream, topic), prepared));
        }
        Ok(sends)
    }
}

/// The messages (by destination, each batch's in batch order) and the failed messages
/// of several batches, taken out of them; their counts stay for the committer.
fn take_messages<'p>(batches: impl Iterator<Item = &'p mut Prepared>) -> Taken {
    let mut taken = Taken::default();
    for prepared in batches {
        taken.failed.append(&mut prepared.failed);
        taken
            .counts
            .push(prepared.groups.iter().map(|(_, group)| group.len()).sum());
        for (destination, messages) in std::mem::take(&mut prepared.groups) {
            if messages.is_empty() {
                continue;
            }
            match taken.groups.iter_mut().find(|(to, _)| *to == destination) {
                Some((_, segments)) => segments.push(messages),
                None => taken.groups.push((destination, vec![messages])),
            }
        }
    }
    taken
}

/// Cuts one destination's messages (each batch's apart, in order) into sends, filled
/// greedily: a message goes into the current send unless that holds `limit` messages
/// already or the message would take it past `max_bytes` of payload (a send holds at
/// least one message). A batch that fits a send of its own becomes one as it is.
fn cut(
    segments: Vec<Vec<OutgoingMessage>>,
    limit: usize,
    max_bytes: usize,
) -> Vec<Vec<OutgoingMessage>> {
    let mut sends = Vec::new();
    let mut current: Vec<OutgoingMessage> = Vec::new();
    let mut current_bytes = 0;
    for segment in segments {
        if current.len() >= limit {
            sends.push(std::mem::take(&mut current));
        }
        let segment_bytes: usize = segment.iter().map(|message| message.payload.len()).sum();
        if current.is_empty() && segment.len() <= limit && segment_bytes <= max_bytes {
            current = segment;
            current_bytes = segment_bytes;
            continue;
        }
        for message in segment {
            let length = message.payload.len();
            if current.len() >= limit || (!current.is_empty() && current_bytes + length > max_bytes)
            {
                sends.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current_bytes += length;
            current.push(message);
        }
    }
    if !current.is_empty() {
        sends.push(current);
    }
    sends
}

/// What [`take_messages`] took: per destination, the batches' messages as they came
/// (kept apart, so that a batch that fills a send moves into it without a copy).
#[derive(Debug, Default)]
struct Taken {
    groups: Vec<Destined>,
    /// Each batch's messages (over all destinations), to tell which batches a send
    /// completes.
    counts: Vec<usize>,
    failed: Failed,
}

/// A destination (stream, topic) with the messages of each batch going there.
type Destined = ((String, String), Vec<Vec<OutgoingMessage>>);

/// The sends of a unit, in order: each destination (stream, topic) with one send.
type Sends = Vec<((String, String), PreparedSend)>;

/// The newest state among batches.
fn newest_state<P>(taken: &[(InFlight<'_>, P)]) -> Option<Vec<u8>> {
    taken
        .iter()
        .rev()
        .find_map(|(in_flight, _)| in_flight.batch.state())
        .map(<[u8]>::to_vec)
}

/// Sends cut but not yet converted for the bus.
type Chunks = Vec<((String, String), Vec<OutgoingMessage>)>;

/// After each of `chunks` is stored, how many of the unit's batches (with `counts`
/// messages each, in order) are stored whole; `None` where that cannot be told. With
/// one destination the chunks hold the batches' messages in order; with several, only
/// the last chunk completes them (all of them).
fn completed_batches(
    chunks: &Chunks,
    counts: &[usize],
    single_destination: bool,
) -> Vec<Option<usize>> {
    let mut completed = vec![None; chunks.len()];
    if single_destination {
        let mut sent = 0;
        let mut batches = 0;
        let mut ends = counts
            .iter()
            .scan(0, |end, count| {
                *end += count;
                Some(*end)
            })
            .peekable();
        for (chunk, completed) in chunks.iter().zip(&mut completed) {
            sent += chunk.1.len();
            while ends.next_if(|end| *end <= sent).is_some() {
                batches += 1;
            }
            *completed = Some(batches);
        }
    }
    if let Some(last) = completed.last_mut() {
        *last = Some(counts.len());
    }
    completed
}

/// Batches the builder made into sends, on their way to the sender.
struct Unit<'s, P> {
    taken: Vec<(InFlight<'s>, P)>,
    /// How many of `taken` (from the first) the sends carry.
    usable: usize,
    /// Messages for the error policy, before the sends.
    failed: Failed,
    /// The sends in order, or why they could not be made.
    sends: Result<Sends, Halt>,
    /// Why the round halts after the sends (a batch that cannot be produced).
    halt_after: Option<Halt>,
    /// With a ledger: the number it gave the unit's sends (`None`: nothing to send).
    marked: Option<u64>,
}

/// Messages and payload bytes the usable batches among `taken` will send (as encoded
/// for the first stream).
fn pending<P>(taken: &[(InFlight<'_>, P)]) -> (usize, usize) {
    taken
        .iter()
        .filter_map(|(in_flight, _)| in_flight.prepared.as_ref().ok())
        .fold((0, 0), |(count, bytes), prepared| {
            (count + prepared.count, bytes + prepared.bytes)
        })
}

/// A source batch ready to send.
#[derive(Debug, Default)]
struct Prepared {
    /// Messages by destination (stream, topic).
    groups: Vec<((String, String), Vec<OutgoingMessage>)>,
    /// Messages that will be delivered, and their bytes (as encoded for the first
    /// stream).
    count: usize,
    bytes: usize,
    /// Messages a transform filtered out.
    filtered: usize,
    /// Messages that failed to shape, with where they were going and why.
    failed: Failed,
}

/// Messages that failed to shape, each with where it was going (stream, topic) and why.
type Failed = Vec<(OutgoingMessage, (String, String), String)>;

/// The codecs of a connector's streams (reading their schema files), or the first
/// problem, naming its stream.
pub(crate) fn connector_codecs(config: &ConnectorConfig) -> Result<Vec<Codec>, String> {
    match config {
        ConnectorConfig::Source(source) => {
            stream_codecs(source.streams.iter().map(|stream| stream_schema!(stream)))
        }
        ConnectorConfig::Sink(sink) => {
            stream_codecs(sink.streams.iter().map(|stream| stream_schema!(stream)))
        }
    }
}

/// Each stream's codec; the first problem names its stream.
fn stream_codecs<'a>(
    streams: impl Iterator<Item = StreamSchema<'a>>,
) -> Result<Vec<Codec>, String> {
    streams
        .map(|stream| codec(&stream).map_err(|error| format!("stream {}: {error}", stream.name)))
        .collect()
}

/// A stream's codec: its schema, with the Avro schema from `avro_schema_json` or the
/// file `avro_schema_path` names, and the Protobuf message type `proto_message_type`
/// of the descriptor set file `proto_descriptor_set` (files are read once, at start).
fn codec(stream: &StreamSchema<'_>) -> Result<Codec, String> {
    let text = match (stream.avro_schema_json, stream.avro_schema_path) {
        (Some(json), _) => Some(json.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| format!("avro_schema_path {path}: {error}"))?,
        ),
        (None, None) => None,
    };
    let avro = match text {
        Some(text) => Some(Arc::new(
            AvroSchema::parse(&text).map_err(|error| format!("Avro schema: {error}"))?,
        )),
        None => None,
    };
    let proto = match (stream.proto_descriptor_set, stream.proto_message_type) {
        (Some(path), Some(message_type)) => {
            let bytes = std::fs::read(path)
                .map_err(|error| format!("proto_descriptor_set {path}: {error}"))?;
            Some(Arc::new(
                ProtoSchema::from_descriptor_set(&bytes, message_type)
                    .map_err(|error| format!("proto_descriptor_set {path}: {error}"))?,
            ))
        }
        (Some(_), None) => {
            return Err(
                "proto_descriptor_set needs proto_message_type (the message's full name)"
                    .to_owned(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "proto_message_type needs proto_descriptor_set (a descriptor set file)".to_owned(),
            );
        }
        (None, None) => None,
    };
    Ok(Codec {
        schema: stream.schema,
        avro,
        proto,
    })
}

/// A plugin's batch as produced: ids (0 lets the client pick), headers and payloads.
/// The payloads are lent from the plugin (see `SourceBatch::payloads`), so every one
/// must be dropped before the batch is settled: the pipeline consumes them in the send.
fn outgoing_batch(batch: &SourceBatch<'_>) -> Vec<OutgoingMessage> {
    batch
        .messages()
        .iter()
        .zip(batch.payloads())
        .map(|(message, payload)| outgoing(message, payload))
        .collect()
}

/// A message as produced, with its payload copied already.
fn outgoing(message: &Message<'_>, payload: Bytes) -> OutgoingMessage {
    OutgoingMessage {
        id: (message.id() != 0).then(|| message.id()),
        headers: owned_headers(message),
        payload,
    }
}

fn owned_headers(message: &Message<'_>) -> Vec<OwnedHeader> {
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

/// Runs every (stream, topic) of a sink, each in its own task; when one fails, the
/// others stop too, so the connector restarts as a whole.
#[allow(clippy::too_many_arguments)]
async fn run_sink(
    config: &SinkConfig,
    chain: &TransformChain,
    codecs: Vec<Codec>,
    sink: &Arc<SinkInstance>,
    connection: &Connection<'_>,
    retry: RetryPolicy,
    status: &StatusCell,
    mut control: Control,
) {
    let context = connection.context;
    if let (ErrorPolicy::DeadLetter, Some(target)) = (config.error_policy, &config.dead_letter) {
        let ensured = retry
            .run(status, "create dead letter topic", || {
                context.bus.ensure_topic(&target.stream, &target.topic)
            })
            .await;
        if let Err(error) = ensured {
            status.fail(format!(
                "cannot reach dead letter topic {}/{}: {error}",
                target.stream, target.topic
            ));
            return;
        }
    }
    // A new run (maybe of another config version, with other topics) owes nothing to
    // the lag of the last one.
    status.clear_lag();
    let (local, _) = watch::channel(Desired::Run);
    let mut topics = JoinSet::new();
    let config = Arc::new(config.clone());
    let pairs = config
        .streams
        .iter()
        .zip(codecs)
        .flat_map(|(stream, codec)| {
            stream
                .topics
                .iter()
                .map(move |topic| (stream, codec.clone(), topic))
        });
    for (slot, (stream, codec, topic)) in pairs.enumerate() {
        let pipeline = SinkPipeline {
            slot,
            stall: context.stall,
            chain: chain.clone(),
            codec,
            config: config.clone(),
            stream: stream.clone(),
            topic: topic.clone(),
            group: group_name(&config, stream),
            sink: sink.clone(),
            bus: context.bus.clone(),
            reader: connection.reader.clone(),
            retry,
            status: status.clone(),
        };
        topics.spawn(pipeline.run(Control::new(local.subscribe())));
    }
    let mut following = true;
    loop {
        tokio::select! {
            desired = control.changed(), if following => match desired {
                Some(desired) => { local.send_replace(desired); }
                None => {
                    following = false;
                    local.send_replace(Desired::Stop);
                }
            },
            joined = topics.join_next() => {
                if joined.is_none() {
                    break;
                }
                if status.snapshot().state == ConnectorState::Failed {
                    following = false;
                    local.send_replace(Desired::Stop);
                }
            }
        }
    }
}

/// The consumer group of a sink stream.
pub(crate) fn group_name(config: &SinkConfig, stream: &SinkStream) -> String {
    stream
        .consumer_group
        .clone()
        .unwrap_or_else(|| format!("iggy-connect-sink-{}", config.key))
}

/// Whether a plugin failure concerns the message rather than the instance: only then can
/// the error policy pass over the message. After a panic the instance refuses every call.
fn message_level(error: &CallError) -> bool {
    matches!(
        error.kind,
        CallErrorKind::Retryable | CallErrorKind::Permanent | CallErrorKind::Unknown(_)
    )
}

/// One (stream, topic) of a sink.
struct SinkPipeline {
    /// Its number among the sink's (stream, topic) pairs, for its lag.
    slot: usize,
    /// When its group counts as stuck.
    stall: StallPolicy,
    chain: TransformChain,
    codec: Codec,
    config: Arc<SinkConfig>,
    stream: SinkStream,
    topic: String,
    group: String,
    sink: Arc<SinkInstance>,
    bus: Arc<dyn MessageBus>,
    /// Reads the next batch of a partition while the current one is delivered.
    reader: Arc<dyn MessageBus>,
    retry: RetryPolicy,
    status: StatusCell,
}

/// Most batches a sink reads ahead in a row before it polls the group again, which
/// moves on to the member's next partition: one partition's backlog holds up the
/// others for at most this many batches. A read that comes back empty ends the run too
/// (and when the group poll finds nothing either, the sink waits `poll_interval`).
const MAX_READ_AHEAD_RUN: usize = 16;

/// How a sink's reads ahead have gone in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Reading ahead works (or has not been tried).
    Working,
    /// The last read failed (logged once, until one works again).
    Failing,
    /// The bus cannot read ([`MessageBus::read`] said `None`): the sink only polls.
    Unsupported,
}

/// The next batch of a partition, being read while the current one is delivered. At
/// most one per (stream, topic) of a sink: what a sink holds stays bounded.
struct ReadAhead(tokio::task::JoinHandle<Result<Option<Polled>, BusError>>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SinkPipeline {
    async fn run(self, mut control: Control) {
        let (status, retry, stream, topic) = (&self.status, self.retry, &self.stream, &self.topic);
        let joined = retry
            .run(status, "join consumer group", || async {
                self.bus.ensure_topic(&stream.stream, topic).await?;
                self.bus
                    .join_group(&stream.stream, topic, &self.group)
                    .await
            })
            .await;
        if let Err(error) = joined {
            status.fail(format!(
                "cannot join group {} on {}/{topic}: {error}",
                self.group, stream.stream
            ));
            return;
        }
        status.set_state(ConnectorState::Running);
        // Each batch's offset is stored before the next batch goes to the plugin, so a
        // crash repeats at most one batch. The group's `next` starts after the stored
        // offset and so cannot run ahead: the partition's next batch is read by offset
        // instead, on the reader, while the plugin takes this one and it is stored.
        let mut ahead: Option<ReadAhead> = None;
        let mut run = 0;
        let mut reads = Reads::Working;
        // The last batch's buffers, once the plugin is done with it: the next batch is
        // built in them.
        let mut spare: Option<SinkBatchBuffers> = None;
        let mut watch = GroupWatch::default();
        while control.proceed(status).await {
            if self.watch_group(&mut watch).await {
                // The group was made again: what was read ahead may be another's now.
                ahead = None;
            }
            let read = match ahead.take() {
                Some(read) => tokio::select! {
                    () = control.stopping() => return,
                    read = self.finish_read(read, &mut reads) => read,
                },
                None => None,
            };
            let polled = match read {
                Some(polled) => {
                    run += 1;
                    polled
                }
                None => {
                    run = 0;
                    let polled = tokio::select! {
                        () = control.stopping() => return,
                        polled = retry.run(status, "poll", || self.bus.poll(&stream.stream, topic, &self.group, stream.batch_length)) => polled,
                    };
                    match polled {
                        Ok(polled) => polled,
                        Err(error) => {
                            status
                                .fail(format!("polling {}/{topic} failed: {error}", stream.stream));
                            return;
                        }
                    }
                }
            };
            let Some(last_offset) = polled.messages.last().map(|message| message.offset) else {
                if watch.measures != Measures::Group {
                    status.set_lag(self.slot, 0);
                }
                tokio::select! {
                    () = control.stopping() => return,
                    () = tokio::time::sleep(stream.poll_interval.get()) => continue,
                }
            };
            if run < MAX_READ_AHEAD_RUN && reads != Reads::Unsupported {
                ahead = Some(self.read_ahead(polled.partition_id, last_offset + 1));
            }
            let received = Instant::now();
            let count = polled.messages.len();
            let bytes: usize = polled.messages.iter().map(|m| m.payload.len()).sum();
            status.received(count, bytes);
            if watch.measures != Measures::Group {
                // The bus cannot tell the group's progress: the polled partition's lag.
                status.set_lag(self.slot, polled.current_offset.saturating_sub(last_offset));
            }
            let partition = polled.partition_id;
            let codec = std::slice::from_ref(&self.codec);
            let messages = if shape::needed(&self.chain, &self.codec, codec) {
                let shaped = shape::sink_batch(&self.chain, &self.codec, polled.messages);
                status.filtered(shaped.dropped);
                for failed in shaped.failed {
                    let offset = failed.message.offset;
                    let original = OutgoingMessage {
                        id: Some(failed.message.id),
                        headers: failed.message.headers,
                        payload: failed.message.payload,
                    };
                    if self
                        .handle_failed(partition, offset, original, &failed.error)
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
                shaped.kept
            } else {
                polled.messages
            };
            let source = BatchSource {
                stream: stream.stream.clone(),
                topic: topic.clone(),
                partition_id: partition,
                schema: stream.schema,
                current_offset: polled.current_offset,
            };
            let mut builder = match spare.take() {
                Some(buffers) => SinkBatchBuilder::reusing(source, buffers, messages.len()),
                None => SinkBatchBuilder::with_capacity(source, messages.len()),
            };
            for message in messages {
                let meta = MessageMeta {
                    id: message.id,
                    offset: message.offset,
                    timestamp: message.timestamp,
                    origin_timestamp: message.origin_timestamp,
                    checksum: message.checksum,
                };
                builder.push(meta, message.headers, message.payload);
            }
            let batch = Arc::new(builder.build());
            // A batch in flight is finished even when a stop is asked for meanwhile.
            let (delivered, delivered_bytes) = if batch.is_empty() {
                (0, 0)
            } else {
                match self.deliver(&batch).await {
                    Some(delivered) => delivered,
                    None => return,
                }
            };
            let stored = retry
                .run_when(
                    status,
                    "store offset",
                    |error: &BusError| error.kind() != BusErrorKind::NotOwned,
                    || {
                        self.bus.store_offset(
                            &stream.stream,
                            topic,
                            &self.group,
                            partition,
                            last_offset,
                        )
                    },
                )
                .await;
            match stored {
                Ok(()) => {}
                // The partition went to another member, which goes on from the group's
                // stored offset: this batch may reach a sink twice, nothing is lost.
                // What was read ahead of it is that member's now.
                Err(error) if error.kind() == BusErrorKind::NotOwned => {
                    tracing::warn!(
                        connector = %self.config.key,
                        stream = %stream.stream,
                        topic = %topic,
                        partition,
                        offset = last_offset,
                        %error,
                        "the partition moved to another member of the group; its offset is theirs to store"
                    );
                    ahead = None;
                }
                Err(error) => {
                    status.fail(format!("storing offset {last_offset} failed: {error}"));
                    return;
                }
            }
            status.delivered(delivered, delivered_bytes, received.elapsed());
            spare = Arc::try_unwrap(batch).ok().map(SinkBatch::into_buffers);
        }
    }

    /// Looks at the group's progress when it is time (every
    /// [`CHECK_INTERVAL`](crate::stall::CHECK_INTERVAL)): sets the
    /// sink's lag, and resets the group when a partition's unread messages have left
    /// its offset where it was for `reset_group_after` (see `stall.rs`). True when it
    /// reset the group.
    async fn watch_group(&self, watch: &mut GroupWatch) -> bool {
        let now = Instant::now();
        if !watch.due(now) {
            return false;
        }
        let (stream, topic, group) = (&self.stream.stream, &self.topic, &self.group);
        let progress = match self.bus.group_progress(stream, topic, group).await {
            Ok(Some(progress)) => progress,
            Ok(None) => {
                watch.measures = Measures::CannotTell;
                return false;
            }
            Err(error) => {
                // Until a look works again the lag is the polled partition's (a lag
                // frozen at its last value could hide a stall); said once.
                if watch.measures == Measures::Group {
                    tracing::warn!(connector = %self.config.key, %stream, %topic, %group, %error, "cannot read the consumer group's progress; its lag is the polled partition's until it can");
                }
                watch.measures = Measures::Unknown;
                return false;
            }
        };
        let look = watch.observe(&progress, now);
        self.status.set_lag(self.slot, look.lag);
        if look.stuck_for < self.stall.reset_group_after {
            return false;
        }
        tracing::warn!(
            connector = %self.config.key,
            %stream,
            %topic,
            %group,
            lag = look.lag,
            stuck_for = ?look.stuck_for,
            "unread messages have had no reader; resetting the consumer group (a killed Iggy server keeps members that nobody is behind)"
        );
        watch.forget();
        match self
            .bus
            .reset_group(stream, topic, group, progress.group_id)
            .await
        {
            Ok(true) => self.status.group_reset(),
            Ok(false) => {
                tracing::info!(connector = %self.config.key, %stream, %topic, %group, "the consumer group was reset meanwhile; joined it")
            }
            Err(error) => {
                tracing::warn!(connector = %self.config.key, %stream, %topic, %group, %error, "resetting the consumer group failed")
            }
        }
        true
    }

    /// Starts reading a partition from `offset` on the reader.
    fn read_ahead(&self, partition: u32, offset: u64) -> ReadAhead {
        let (reader, stream, topic) = (
            self.reader.clone(),
            self.stream.stream.clone(),
            self.topic.clone(),
        );
        let count = self.stream.batch_length;
        ReadAhead(tokio::spawn(async move {
            reader.read(&stream, &topic, partition, offset, count).await
        }))
    }

    /// The batch read ahead, or `None` when there is none to deliver (the group is
    /// polled instead, from the stored offsets: nothing is lost). A failure is logged,
    /// once until a read succeeds again.
    async fn finish_read(&self, mut read: ReadAhead, reads: &mut Reads) -> Option<Polled> {
        let error = match (&mut read.0).await {
            Ok(Ok(Some(polled))) => {
                *reads = Reads::Working;
                return Some(polled).filter(|polled| !polled.messages.is_empty());
            }
            Ok(Ok(None)) => {
                *reads = Reads::Unsupported;
                return None;
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        if std::mem::replace(reads, Reads::Failing) != Reads::Failing {
            tracing::warn!(
                connector = %self.config.key,
                stream = %self.stream.stream,
                topic = %self.topic,
                %error,
                "reading ahead failed; polling the group instead"
            );
        }
        None
    }

    /// Hands the batch to the plugin. On a message-level failure under `skip` or
    /// `dead_letter`, retries message by message to find the failing ones and hands
    /// those to the policy. Returns the messages and bytes the plugin accepted, or
    /// `None` when the connector failed (nothing of the batch may be committed).
    async fn deliver(&self, batch: &Arc<SinkBatch>) -> Option<(usize, usize)> {
        let status = &self.status;
        let consumed = self
            .retry
            .run_when(status, "consume", retryable, || self.sink.consume(batch))
            .await;
        let error = match consumed {
            Ok(()) => {
                let bytes = batch.messages().iter().map(|m| m.payload().len()).sum();
                return Some((batch.len(), bytes));
            }
            Err(error) => error,
        };
        let first = batch.messages().first().map_or(0, Message::offset);
        let last = batch.messages().last().map_or(0, Message::offset);
        if self.config.error_policy == ErrorPolicy::Fail || !message_level(&error) {
            status.fail(format!(
                "the sink failed on offsets {first}..={last} of {}/{}: {error}",
                self.stream.stream, self.topic
            ));
            return None;
        }
        tracing::warn!(connector = %self.config.key, %error, first, last, "batch failed; retrying its messages one by one");
        let (mut delivered, mut bytes) = (0, 0);
        for message in batch.messages() {
            let single = Arc::new(single_message_batch(batch, message));
            let consumed = self
                .retry
                .run_when(status, "consume", retryable, || self.sink.consume(&single))
                .await;
            match consumed {
                Ok(()) => {
                    delivered += 1;
                    bytes += message.payload().len();
                }
                Err(error) if !message_level(&error) => {
                    status.fail(format!(
                        "the sink failed on offset {} of {}/{}: {error}",
                        message.offset(),
                        self.stream.stream,
                        self.topic
                    ));
                    return None;
                }
                Err(error) => {
                    self.handle_failed(
                        batch.source().partition_id,
                        message.offset(),
                        outgoing(message, Bytes::copy_from_slice(message.payload())),
                        &error.to_string(),
                    )
                    .await?;
                }
            }
        }
        Some((delivered, bytes))
    }

    /// Applies the error policy to one message at `offset`: `None` when the connector
    /// failed (the `fail` policy, or a dead letter Iggy would not store).
    async fn handle_failed(
        &self,
        partition: u32,
        offset: u64,
        message: OutgoingMessage,
        error: &str,
    ) -> Option<()> {
        let origin = Origin {
            connector: &self.config.key,
            stream: &self.stream.stream,
            topic: &self.topic,
            partition: Some(partition),
            offset: Some(offset),
        };
        let handled = apply_error_policy(
            self.config.error_policy,
            self.config.dead_letter.as_ref(),
            &origin,
            message,
            error,
            self.bus.as_ref(),
            self.retry,
            &self.status,
        )
        .await;
        if let Err(reason) = handled {
            self.status.fail(reason);
            return None;
        }
        Some(())
    }
}

/// Where a failed message came from (sinks) or was going (sources).
struct Origin<'a> {
    connector: &'a str,
    stream: &'a str,
    topic: &'a str,
    partition: Option<u32>,
    offset: Option<u64>,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stream, self.topic)?;
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        Ok(())
    }
}

/// The error policy for one message: `Ok` when it was skipped or its dead letter
/// stored; `Err(reason)` when the connector must fail.
#[allow(clippy::too_many_arguments)]
async fn apply_error_policy(
    policy: ErrorPolicy,
    target: Option<&DeadLetterTarget>,
    origin: &Origin<'_>,
    message: OutgoingMessage,
    error: &str,
    bus: &dyn MessageBus,
    retry: RetryPolicy,
    status: &StatusCell,
) -> Result<(), String> {
    let connector = origin.connector;
    match (policy, target) {
        (ErrorPolicy::DeadLetter, Some(target)) => {
            let letter = dead_letter_message(origin, message, error);
            let sent = retry
                .run(status, "send dead letter", || {
                    bus.send(&target.stream, &target.topic, vec![letter.clone()])
                })
                .await;
            if let Err(send_error) = sent {
                return Err(format!(
                    "{origin} failed ({error}) and could not go to the dead letter topic {}/{}: {send_error}",
                    target.stream, target.topic
                ));
            }
            tracing::warn!(%connector, origin = %origin, %error, dead_letter_stream = %target.stream, dead_letter_topic = %target.topic, "message sent to the dead letter topic");
            status.dead_lettered(error.to_owned());
            Ok(())
        }
        (ErrorPolicy::Skip, _) => {
            tracing::warn!(%connector, origin = %origin, %error, "message skipped");
            status.skipped(error.to_owned());
            Ok(())
        }
        _ => Err(format!("{origin} failed: {error}")),
    }
}

fn retryable(error: &CallError) -> bool {
    error.kind == CallErrorKind::Retryable
}

/// A copy of one message of `batch` as a batch of its own.
fn single_message_batch(batch: &SinkBatch, message: &Message<'_>) -> SinkBatch {
    let mut builder = SinkBatchBuilder::with_capacity(batch.source().clone(), 1);
    builder.push(
        MessageMeta {
            id: message.id(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            origin_timestamp: message.origin_timestamp(),
            checksum: message.checksum(),
        },
        owned_headers(message),
        bytes::Bytes::copy_from_slice(message.payload()),
    );
    builder.build()
}

/// The dead letter of a message: its id, headers and payload, plus headers saying
/// where it came from (or, from a source, where it was going) and why it failed.
fn dead_letter_message(
    origin: &Origin<'_>,
    mut letter: OutgoingMessage,
    error: &str,
) -> OutgoingMessage {
    letter.headers.extend([
        OwnedHeader::string(dead_letter::ERROR, error),
        OwnedHeader::string(dead_letter::CONNECTOR, origin.connector),
        OwnedHeader::string(dead_letter::STREAM, origin.stream),
        OwnedHeader::string(dead_letter::TOPIC, origin.topic),
    ]);
    if let Some(partition) = origin.partition {
        letter.headers.push(OwnedHeader::string(
            dead_letter::PARTITION,
            partition.to_string(),
        ));
    }
    if let Some(offset) = origin.offset {
        letter
            .headers
            .push(OwnedHeader::string(dead_letter::OFFSET, offset.to_string()));
    }
    letter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(lengths: &[usize]) -> Chunks {
        lengths
            .iter()
            .map(|length| {
                let message = OutgoingMessage {
                    id: None,
                    headers: Vec::new(),
                    payload: Bytes::from_static(b"m"),
                };
                (("s".to_owned(), "t".to_owned()), vec![message; *length])
            })
            .collect()
    }

    #[test]
    fn a_send_completes_the_batches_that_end_within_it() {
        // Batches of 3, 0 (all filtered), 4 and 2 messages, cut into sends of 4.
        let counts = [3, 0, 4, 2];
        assert_eq!(
            completed_batches(&chunks(&[4, 4, 1]), &counts, true),
            [Some(2), Some(3), Some(4)]
        );
        // A send that ends inside the first batch completes none.
        assert_eq!(
            completed_batches(&chunks(&[2, 7]), &counts, true),
            [Some(0), Some(4)]
        );
    }

    fn sized(lengths: &[usize]) -> Vec<OutgoingMessage> {
        lengths
            .iter()
            .map(|length| OutgoingMessage {
                id: None,
                headers: Vec::new(),
                payload: Bytes::from(vec![b'x'; *length]),
            })
            .collect()
    }

    fn shape(sends: &[Vec<OutgoingMessage>]) -> Vec<Vec<usize>> {
        sends
            .iter()
            .map(|send| send.iter().map(|message| message.payload.len()).collect())
            .collect()
    }

    #[test]
    fn batches_are_cut_into_sends_by_count_and_bytes_across_batch_ends() {
        // By count: batches of 3 and 2 into sends of at most 2.
        let sends = cut(vec![sized(&[1, 1, 1]), sized(&[1, 1])], 2, usize::MAX);
        assert_eq!(shape(&sends), [vec![1, 1], vec![1, 1], vec![1]]);
        // Batches that fit go whole, and a short one is topped up by the next.
        let sends = cut(
            vec![sized(&[1, 1]), sized(&[1]), sized(&[1, 1])],
            3,
            usize::MAX,
        );
        assert_eq!(shape(&sends), [vec![1, 1, 1], vec![1, 1]]);
        // By bytes: never past 10, but always one message, however large.
        let sends = cut(vec![sized(&[4, 4, 4]), sized(&[30, 1])], 100, 10);
        assert_eq!(shape(&sends), [vec![4, 4], vec![4], vec![30], vec![1]]);
        assert!(cut(Vec::new(), 5, 5).is_empty());
    }

    #[test]
    fn with_several_destinations_only_the_last_send_completes_batches() {
        assert_eq!(
            completed_batches(&chunks(&[4, 4, 1]), &[3, 4, 2], false),
            [None, None, Some(3)]
        );
        assert!(completed_batches(&Vec::new(), &[1], true).is_empty());
    }
}
