//! The sink pipeline: one task per (stream, topic) of a sink, each polling its consumer
//! group, reading the polled partition ahead on a second connection, shaping each
//! batch, handing it to the plugin, and storing its offset while the next batch goes to
//! the plugin (one store in flight: a crash repeats at most two batches of a
//! partition). It also watches the group's progress, for the lag and to reset a stuck
//! group (see `stall.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use config_provider::{ErrorPolicy, SinkConfig, SinkStream};
use connector_sdk::Message;
use plugin_host::{
    BatchSource, CallError, CallErrorKind, MessageMeta, SinkBatch, SinkBatchBuffers,
    SinkBatchBuilder, SinkInstance,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use transforms::{Codec, TransformChain};

use super::error_policy::{ErrorHandling, Origin};
use super::report::{BatchReport, StageTimes};
use super::{Connection, ConnectorRun, RetryPolicy, outgoing, owned_headers};
use crate::bus::{BusError, BusErrorKind, Destination, MessageBus, OutgoingMessage, Polled};
use crate::control::{Control, Desired};
use crate::shape;
use crate::stall::{GroupWatch, Measures, StallPolicy};
use crate::status::{BatchStages, ConnectorState, Stage, StatusCell};

/// Runs every (stream, topic) of a sink, each in its own task; when one fails, the
/// others stop too, so the connector restarts as a whole.
pub(super) async fn run_sink(
    run: &ConnectorRun<'_>,
    config: &SinkConfig,
    codecs: Vec<Codec>,
    sink: &Arc<SinkInstance>,
    connection: &Connection,
    mut control: Control,
) {
    let (status, retry) = (run.status, run.retry);
    if let (ErrorPolicy::DeadLetter, Some(target)) =
        (config.common.error_policy, &config.common.dead_letter)
    {
        let to = Destination::new(&target.stream, &target.topic);
        let ensured = retry
            .run(status, "create dead letter topic", || {
                connection.bus.ensure_topic(&to)
            })
            .await;
        if let Err(error) = ensured {
            status.fail(format!("cannot reach dead letter topic {to}: {error}"));
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
        let output = transforms::sink_output(run.chain, &codec);
        let pipeline = SinkPipeline {
            slot,
            stall: run.context.stall,
            chain: run.chain.clone(),
            codec,
            output,
            config: config.clone(),
            stream: stream.clone(),
            from: Destination::new(&stream.stream, topic),
            group: group_name(&config, stream),
            sink: sink.clone(),
            bus: connection.bus.clone(),
            reader: connection.reader.clone(),
            retry,
            status: status.clone(),
            report: BatchReport::new(config.common.verbose, config.common.benchmark),
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
fn group_name(config: &SinkConfig, stream: &SinkStream) -> String {
    stream
        .consumer_group
        .clone()
        .unwrap_or_else(|| format!("iggy-connect-sink-{}", config.common.key))
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
    /// The stream's format, as messages are read.
    codec: Codec,
    /// The format the plugin gets them in.
    output: Codec,
    config: Arc<SinkConfig>,
    stream: SinkStream,
    /// The (stream, topic) it consumes.
    from: Destination,
    group: String,
    sink: Arc<SinkInstance>,
    bus: Arc<dyn MessageBus>,
    /// Reads the next batch of a partition while the current one is delivered.
    reader: Arc<dyn MessageBus>,
    retry: RetryPolicy,
    status: StatusCell,
    /// What to log per batch (`verbose`, `benchmark`).
    report: BatchReport,
}

/// A batch the plugin took, whose offset is being stored while the next batch goes to
/// the plugin; it counts as delivered once stored.
struct PendingStore {
    store: Store,
    partition: u32,
    last_offset: u64,
    delivered: usize,
    delivered_bytes: usize,
    /// When the batch was received, for its latency.
    received: Instant,
    /// When the plugin was done with it and its store began.
    committing: Instant,
    stages: BatchStages,
    times: StageTimes,
}

/// An offset store in flight, and when it was done. Dropped unsettled (a pipeline
/// abandoned at the stop deadline), it is abandoned too: a store landing after a later
/// run's would move the group's offset back.
struct Store(tokio::task::JoinHandle<(Result<(), BusError>, Instant)>);

impl Drop for Store {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    async fn run(self, control: Control) {
        let (status, retry, from) = (&self.status, self.retry, &self.from);
        let joined = retry
            .run(status, "join consumer group", || async {
                self.bus.ensure_topic(from).await?;
                self.bus.join_group(from, &self.group).await
            })
            .await;
        if let Err(error) = joined {
            status.fail(format!(
                "cannot join group {} on {from}: {error}",
                self.group
            ));
            return;
        }
        status.set_state(ConnectorState::Running);
        let mut pending = None;
        self.consume(control, &mut pending).await;
        // Whatever ended the run, a batch the plugin took has its offset stored if Iggy
        // will: one batch fewer to deliver again.
        self.settle(&mut pending, &mut None).await;
    }

    /// Polls, shapes, delivers and stores until a stop or a failure. A batch's offset is
    /// stored in the background while the next batch of the partition goes to the
    /// plugin, and that next batch's store starts only once it is done: at most two
    /// batches of a partition are delivered and not stored, the duplicates a crash can
    /// cause. The group's `next` starts after the stored offset and so cannot run
    /// ahead: the partition's next batch is read by offset instead, on the reader,
    /// while the plugin takes this one; a poll of the group waits for the store in
    /// flight first.
    async fn consume(&self, mut control: Control, pending: &mut Option<PendingStore>) {
        let (status, retry, stream, from) = (&self.status, self.retry, &self.stream, &self.from);
        let mut ahead: Option<ReadAhead> = None;
        let mut run = 0;
        let mut reads = Reads::Working;
        // The last batch's buffers, once the plugin is done with it: the next batch is
        // built in them.
        let mut spare: Option<SinkBatchBuffers> = None;
        let mut watch = GroupWatch::default();
        loop {
            // A pause or a stop finds the last batch's offset stored, and counted; a
            // pause asked for after this look is seen before the next batch.
            if !control.run_requested()
                && (!self.settle(pending, &mut ahead).await || !control.proceed(status).await)
            {
                return;
            }
            match self.watch_group(&mut watch, pending).await {
                // The group was made again: what was read ahead may be another's now.
                Some(true) => ahead = None,
                Some(false) => {}
                None => return,
            }
            let started = Instant::now();
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
                    // The group's poll starts after its stored offsets.
                    if !self.settle(pending, &mut ahead).await {
                        return;
                    }
                    let polled = tokio::select! {
                        () = control.stopping() => return,
                        polled = retry.run(status, "poll", || self.bus.poll(from, &self.group, stream.batch_length)) => polled,
                    };
                    match polled {
                        Ok(polled) => polled,
                        Err(error) => {
                            status.fail(format!("polling {from} failed: {error}"));
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
            // Held until the plugin is done with it.
            let bytes: usize = polled.messages.iter().map(|m| m.payload.len()).sum();
            let mut held = status.budget().reserve(bytes);
            // A batch read ahead is one more held: only while the budget has room.
            if run < MAX_READ_AHEAD_RUN && reads != Reads::Unsupported && status.budget().has_room()
            {
                ahead = Some(self.read_ahead(polled.partition_id, last_offset + 1));
            }
            let received = Instant::now();
            let mut times = StageTimes {
                poll: received - started,
                ..StageTimes::default()
            };
            let count = polled.messages.len();
            status.received(count, bytes);
            if watch.measures != Measures::Group {
                // The bus cannot tell the group's progress: the polled partition's lag.
                status.set_lag(self.slot, polled.current_offset.saturating_sub(last_offset));
            }
            let partition = polled.partition_id;
            let output = std::slice::from_ref(&self.output);
            let messages = if transforms::shaping_needed(&self.chain, &self.codec, output) {
                let shaped =
                    shape::sink_batch(&self.chain, &self.codec, &self.output, polled.messages);
                status.filtered(shaped.dropped);
                held.grow(
                    shaped
                        .kept
                        .iter()
                        .map(|message| message.payload.len())
                        .sum(),
                );
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
            // Stage boundaries (see `Stage`): received, shaped, built (`sending`), handed
            // over (`committing`), delivered.
            let shaped = Instant::now();
            times.transform = shaped - received;
            let mut stages = BatchStages::default();
            stages.set(Stage::Decode, times.transform);
            let source = BatchSource {
                stream: from.stream.clone(),
                topic: from.topic.clone(),
                partition_id: partition,
                schema: self.output.schema,
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
            let sending = Instant::now();
            stages.set(Stage::Prepare, sending - shaped);
            let (delivered, delivered_bytes) = if batch.is_empty() {
                (0, 0)
            } else {
                match self.deliver(&batch).await {
                    Some(delivered) => delivered,
                    None => return,
                }
            };
            let committing = Instant::now();
            times.send = committing - sending;
            if !batch.is_empty() {
                stages.set(Stage::Ffi, times.send);
            }
            spare = Arc::try_unwrap(batch).ok().map(SinkBatch::into_buffers);
            drop(held);
            // The last batch's offset first, so stored offsets only grow and at most one
            // store is in flight.
            if !self.settle(pending, &mut ahead).await {
                return;
            }
            *pending = Some(PendingStore {
                store: self.store_offset(partition, last_offset),
                partition,
                last_offset,
                delivered,
                delivered_bytes,
                received,
                committing,
                stages,
                times,
            });
        }
    }

    /// Starts storing `offset` as the group's offset of `partition`, retrying as the
    /// policy says; the task answers with when it was done.
    fn store_offset(&self, partition: u32, offset: u64) -> Store {
        let (bus, from, group) = (self.bus.clone(), self.from.clone(), self.group.clone());
        let (status, retry) = (self.status.clone(), self.retry);
        Store(tokio::spawn(async move {
            let stored = retry
                .run_when(
                    &status,
                    "store offset",
                    |error: &BusError| error.kind() != BusErrorKind::NotOwned,
                    || bus.store_offset(&from, &group, partition, offset),
                )
                .await;
            (stored, Instant::now())
        }))
    }

    /// Waits for the offset store in flight, if any, and counts its batch delivered.
    /// False when it failed and so did the connector.
    async fn settle(
        &self,
        pending: &mut Option<PendingStore>,
        ahead: &mut Option<ReadAhead>,
    ) -> bool {
        let Some(mut batch) = pending.take() else {
            return true;
        };
        let (stored, done) = match (&mut batch.store.0).await {
            Ok(finished) => finished,
            Err(error) => (
                Err(BusError::new(format!(
                    "the offset store task ended: {error}"
                ))),
                Instant::now(),
            ),
        };
        let (from, offset) = (&self.from, batch.last_offset);
        match stored {
            Ok(()) => {}
            // The partition went to another member, which goes on from the group's
            // stored offset: this batch may reach a sink twice, nothing is lost.
            // What was read ahead of it is that member's now.
            Err(error) if error.kind() == BusErrorKind::NotOwned => {
                tracing::warn!(
                    connector = %self.config.common.key,
                    stream = %from.stream,
                    topic = %from.topic,
                    partition = batch.partition,
                    offset,
                    %error,
                    "the partition moved to another member of the group; its offset is theirs to store"
                );
                *ahead = None;
            }
            Err(error) => {
                self.status
                    .fail(format!("storing offset {offset} failed: {error}"));
                return false;
            }
        }
        let (messages, bytes) = (batch.delivered, batch.delivered_bytes);
        self.status
            .delivered(messages, bytes, done - batch.received, &batch.stages);
        batch.times.commit = done - batch.committing;
        self.report.batch(
            &self.config.common.key,
            Some(from),
            messages,
            bytes,
            &batch.times,
        );
        true
    }

    /// Looks at the group's progress when it is time (every
    /// [`CHECK_INTERVAL`](crate::stall::CHECK_INTERVAL)): sets the
    /// sink's lag, and resets the group when a partition's unread messages have left
    /// its offset where it was for `reset_group_after` (see `stall.rs`). `Some(true)`
    /// when it reset the group, `None` when the store in flight, awaited first, failed
    /// and so did the connector.
    async fn watch_group(
        &self,
        watch: &mut GroupWatch,
        pending: &mut Option<PendingStore>,
    ) -> Option<bool> {
        let now = Instant::now();
        if !watch.due(now) {
            return Some(false);
        }
        let (from, group) = (&self.from, &self.group);
        let (stream, topic) = (&from.stream, &from.topic);
        let progress = match self.bus.group_progress(from, group).await {
            Ok(Some(progress)) => progress,
            Ok(None) => {
                watch.measures = Measures::CannotTell;
                return Some(false);
            }
            Err(error) => {
                // Until a look works again the lag is the polled partition's (a lag
                // frozen at its last value could hide a stall); said once.
                if watch.measures == Measures::Group {
                    tracing::warn!(connector = %self.config.common.key, %stream, %topic, %group, %error, "cannot read the consumer group's progress; its lag is the polled partition's until it can");
                }
                watch.measures = Measures::Unknown;
                return Some(false);
            }
        };
        let look = watch.observe(&progress, now);
        self.status.set_lag(self.slot, look.lag);
        if look.stuck_for < self.stall.reset_group_after {
            return Some(false);
        }
        // A reset stores back the offsets it read: the store in flight lands first.
        if !self.settle(pending, &mut None).await {
            return None;
        }
        tracing::warn!(
            connector = %self.config.common.key,
            %stream,
            %topic,
            %group,
            lag = look.lag,
            stuck_for = ?look.stuck_for,
            "unread messages have had no reader; resetting the consumer group (a killed Iggy server keeps members that nobody is behind)"
        );
        watch.forget();
        match self.bus.reset_group(from, group, progress.group_id).await {
            Ok(true) => self.status.group_reset(),
            Ok(false) => {
                tracing::info!(connector = %self.config.common.key, %stream, %topic, %group, "the consumer group was reset meanwhile; joined it")
            }
            Err(error) => {
                tracing::warn!(connector = %self.config.common.key, %stream, %topic, %group, %error, "resetting the consumer group failed")
            }
        }
        Some(true)
    }

    /// Starts reading a partition from `offset` on the reader.
    fn read_ahead(&self, partition: u32, offset: u64) -> ReadAhead {
        let (reader, from) = (self.reader.clone(), self.from.clone());
        let count = self.stream.batch_length;
        ReadAhead(tokio::spawn(async move {
            reader.read(&from, partition, offset, count).await
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
                connector = %self.config.common.key,
                stream = %self.from.stream,
                topic = %self.from.topic,
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
        if self.config.common.error_policy == ErrorPolicy::Fail || !message_level(&error) {
            status.fail(format!(
                "the sink failed on offsets {first}..={last} of {}: {error}",
                self.from
            ));
            return None;
        }
        tracing::warn!(connector = %self.config.common.key, %error, first, last, "batch failed; retrying its messages one by one");
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
                        "the sink failed on offset {} of {}: {error}",
                        message.offset(),
                        self.from
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
            connector: &self.config.common.key,
            stream: &self.from.stream,
            topic: &self.from.topic,
            partition: Some(partition),
            offset: Some(offset),
        };
        let handling = ErrorHandling {
            policy: self.config.common.error_policy,
            dead_letter: self.config.common.dead_letter.as_ref(),
            bus: self.bus.as_ref(),
            retry: self.retry,
            status: &self.status,
        };
        let handled = handling.apply(&origin, message, error).await;
        if let Err(reason) = handled {
            self.status.fail(reason);
            return None;
        }
        Some(())
    }
}

/// Whether a plugin call may succeed when made again.
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
