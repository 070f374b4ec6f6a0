//! The pipelines: a source runner (plugin -> Iggy) and a sink runner (Iggy -> plugin).
//!
//! Delivery is at least once. A source batch is accepted (its cursor moves) only after
//! Iggy stored it on every configured stream and its state was persisted; otherwise it
//! is rejected, and the source produces it again after a pause. A sink stores its consumer offset only after the
//! plugin reported success. Failed calls are retried with exponential backoff; when the
//! retries run out, the connector is `failed` with the error and nothing is committed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use config_provider::{SinkConfig, SinkStream, SourceConfig};
use plugin_host::{BatchSource, MessageMeta, SinkBatchBuilder, SinkInstance, SourceInstance};
use tokio::sync::watch;

use crate::bus::{MessageBus, OutgoingMessage};
use crate::state::StateStore;
use crate::status::{ConnectorState, StatusCell};

/// How failed calls are retried before a connector fails.
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
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
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

    /// Runs `call` until it succeeds or the attempts run out, counting retries.
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
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.attempts.saturating_sub(1));
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|error: &E, pause: Duration| {
                tracing::warn!(what, %error, ?pause, "retrying");
                status.retried(error.to_string());
            })
            .await
    }
}

/// Waits until shutdown is asked for.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Runs a source until shutdown or failure; then closes it.
pub(crate) async fn run_source(
    config: SourceConfig,
    source: SourceInstance,
    bus: Arc<dyn MessageBus>,
    state: StateStore,
    retry: RetryPolicy,
    status: StatusCell,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = config.key.clone();
    for stream in &config.streams {
        let ensured = retry
            .run(&status, "create topic", || {
                bus.ensure_topic(&stream.stream, &stream.topic)
            })
            .await;
        if let Err(error) = ensured {
            status.fail(format!(
                "cannot reach topic {}/{}: {error}",
                stream.stream, stream.topic
            ));
            close_source(source, &key).await;
            return;
        }
    }
    status.set_state(ConnectorState::Running);
    // Consecutive batches that could not be delivered.
    let mut failures = 0;
    loop {
        let polled = tokio::select! {
            () = stopped(&mut shutdown) => break,
            polled = source.poll() => polled,
        };
        let batch = match polled {
            Ok(batch) => batch,
            Err(error) if error.is_retryable() => {
                status.retried(error.to_string());
                tokio::select! {
                    () = stopped(&mut shutdown) => break,
                    () = tokio::time::sleep(retry.initial_backoff) => continue,
                }
            }
            Err(error) => {
                status.fail(format!("poll failed: {error}"));
                break;
            }
        };
        let messages: Vec<OutgoingMessage> = batch
            .messages()
            .iter()
            .map(|message| OutgoingMessage {
                id: (message.id() != 0).then(|| message.id()),
                headers: message
                    .headers()
                    .filter_map(|header| {
                        Some(connector_sdk::OwnedHeader {
                            key: header.key.to_owned(),
                            kind: connector_sdk::HeaderKind::from_code(header.kind)?,
                            value: header.value.to_vec(),
                        })
                    })
                    .collect(),
                // Iggy's client needs owned payloads; this is the source path's one copy.
                payload: bytes::Bytes::copy_from_slice(message.payload()),
            })
            .collect();
        let new_state = batch.state().map(<[u8]>::to_vec);
        let count = messages.len();
        let mut delivered = Ok(());
        if !messages.is_empty() {
            let mut messages = Some(messages);
            for (index, stream) in config.streams.iter().enumerate() {
                // The last stream takes the batch; the others get copies.
                let batch = if index + 1 == config.streams.len() {
                    messages.take().unwrap_or_default()
                } else {
                    messages.clone().unwrap_or_default()
                };
                if let Err(error) = bus.send(&stream.stream, &stream.topic, batch).await {
                    delivered = Err(format!(
                        "sending to {}/{} failed: {error}",
                        stream.stream, stream.topic
                    ));
                    break;
                }
            }
        }
        if delivered.is_ok()
            && let Some(new_state) = new_state
            && let Err(error) = state.write(&key, new_state).await
        {
            delivered = Err(format!("cannot persist the source state: {error}"));
        }
        match delivered {
            Ok(()) => {
                failures = 0;
                status.moved(count);
                if let Err(error) = batch.accept().await {
                    status.fail(format!("the source refused the accept: {error}"));
                    break;
                }
            }
            Err(error) => {
                // The source rewinds and produces the batch again; its state was not
                // persisted. Retry after a pause, up to the policy's attempts.
                let _ = batch.reject().await;
                failures += 1;
                if failures >= retry.attempts {
                    status.fail(format!("{error} ({failures} attempts)"));
                    break;
                }
                tracing::warn!(connector = %key, %error, attempt = failures, "batch rejected; retrying");
                status.retried(error);
                tokio::select! {
                    () = stopped(&mut shutdown) => break,
                    () = tokio::time::sleep(retry.backoff(failures)) => {}
                }
            }
        }
    }
    close_source(source, &key).await;
    if status.snapshot().state != ConnectorState::Failed {
        status.set_state(ConnectorState::Stopped);
    }
}

async fn close_source(source: SourceInstance, key: &str) {
    if let Err(error) = source.close(Duration::from_secs(10)).await {
        tracing::warn!(connector = %key, %error, "closing the source failed");
    }
}

/// The consumer group of a sink stream.
pub(crate) fn group_name(config: &SinkConfig, stream: &SinkStream) -> String {
    stream
        .consumer_group
        .clone()
        .unwrap_or_else(|| format!("iggy-connect-sink-{}", config.key))
}

/// Runs one (stream, topic) of a sink until shutdown or failure.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_sink_topic(
    config: Arc<SinkConfig>,
    stream: SinkStream,
    topic: String,
    sink: Arc<SinkInstance>,
    bus: Arc<dyn MessageBus>,
    retry: RetryPolicy,
    status: StatusCell,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = group_name(&config, &stream);
    let joined = retry
        .run(&status, "join consumer group", || async {
            bus.ensure_topic(&stream.stream, &topic).await?;
            bus.join_group(&stream.stream, &topic, &group).await
        })
        .await;
    if let Err(error) = joined {
        status.fail(format!(
            "cannot join group {group} on {}/{topic}: {error}",
            stream.stream
        ));
        return;
    }
    status.set_state(ConnectorState::Running);
    loop {
        let polled = tokio::select! {
            () = stopped(&mut shutdown) => return,
            polled = retry.run(&status, "poll", || bus.poll(&stream.stream, &topic, &group, stream.batch_length)) => polled,
        };
        let polled = match polled {
            Ok(polled) => polled,
            Err(error) => {
                status.fail(format!("polling {}/{topic} failed: {error}", stream.stream));
                return;
            }
        };
        let Some(last_offset) = polled.messages.last().map(|message| message.offset) else {
            tokio::select! {
                () = stopped(&mut shutdown) => return,
                () = tokio::time::sleep(stream.poll_interval.get()) => continue,
            }
        };
        let count = polled.messages.len();
        let mut builder = SinkBatchBuilder::with_capacity(
            BatchSource {
                stream: stream.stream.clone(),
                topic: topic.clone(),
                partition_id: polled.partition_id,
                schema: stream.schema,
                current_offset: polled.current_offset,
            },
            count,
        );
        for message in polled.messages {
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
        // A batch in flight is finished even when shutdown is asked for meanwhile.
        if let Err(error) = retry.run(&status, "consume", || sink.consume(&batch)).await {
            status.fail(format!(
                "the sink failed on offsets up to {last_offset}: {error}"
            ));
            return;
        }
        let stored = retry
            .run(&status, "store offset", || {
                bus.store_offset(
                    &stream.stream,
                    &topic,
                    &group,
                    polled.partition_id,
                    last_offset,
                )
            })
            .await;
        if let Err(error) = stored {
            status.fail(format!("storing offset {last_offset} failed: {error}"));
            return;
        }
        status.moved(count);
    }
}
