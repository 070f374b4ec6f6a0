//! The first stage of a source round: takes batches from the plugin, as many in flight
//! as may be unsettled, and shapes them for the streams.

use std::time::Instant;

use bytes::Bytes;
use connector_sdk::Schema;
use plugin_host::SourceInstance;
use tokio::sync::{Semaphore, mpsc};
use transforms::Codec;

use super::{Halt, Held, InFlight, Prepared, RoundState, SourcePipeline};
use crate::bus::{Destination, OutgoingMessage};
use crate::control::Control;
use crate::runner::outgoing_batch;
use crate::runner::report::StageTimes;
use crate::status::{BatchStages, Stage};

/// Polls the plugin and shapes what it produced.
pub(super) struct Poller<'r, 's> {
    pub(super) pipeline: &'r SourcePipeline<'r>,
    pub(super) source: &'s SourceInstance,
    pub(super) round: &'r RoundState,
    /// One permit per batch that may be unsettled; each batch holds one until the
    /// committer has settled it.
    pub(super) unsettled: &'r Semaphore,
}

impl<'r, 's> Poller<'r, 's> {
    /// Polls until stop is requested, the round halts or the builder is gone.
    pub(super) async fn run(self, control: &mut Control, out: mpsc::Sender<Held<'s, 'r>>) {
        let (status, retry) = (self.pipeline.status, self.pipeline.retry);
        loop {
            let permit = tokio::select! {
                () = control.stopping() => break,
                permit = self.unsettled.acquire() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            if self.round.is_halted() || !control.proceed(status).await {
                break;
            }
            // What the batches in flight hold must leave room for another.
            if !status.budget().has_room() {
                tokio::select! {
                    () = control.stopping() => break,
                    () = status.budget().room() => {}
                }
                // A pause asked for meanwhile comes first.
                if self.round.is_halted() || !control.proceed(status).await {
                    break;
                }
            }
            let started = Instant::now();
            let polled = tokio::select! {
                () = control.stopping() => break,
                polled = self.source.poll() => polled,
            };
            let batch = match polled {
                Ok(batch) => batch,
                Err(error) if error.is_retryable() => {
                    drop(permit);
                    status.retried(error.to_string());
                    tokio::select! {
                        () = control.stopping() => break,
                        () = tokio::time::sleep(retry.backoff(1)) => continue,
                    }
                }
                Err(error) => {
                    self.round
                        .halt(Halt::Fatal(format!("poll failed: {error}")));
                    break;
                }
            };
            // A pause asked for while the plugin polled holds the batch here: nothing
            // is stored once a pause is asked for. It goes on at resume; on a stop it is
            // never settled, so the plugin produces it again (at least once).
            if !control.proceed(status).await {
                break;
            }
            let received = Instant::now();
            let messages = outgoing_batch(&batch);
            // Stage boundaries (see `Stage`): received, decoded, shaped.
            let decoded = Instant::now();
            let bytes: usize = messages.iter().map(|message| message.payload.len()).sum();
            status.received(messages.len(), bytes);
            let mut held = status.budget().reserve(bytes);
            let prepared = match batch.schema() {
                Ok(schema) => {
                    let prepared = self.prepare(schema, messages);
                    status.filtered(prepared.filtered);
                    held.grow(prepared.made);
                    Ok(prepared)
                }
                Err(error) => Err(Halt::Fatal(format!(
                    "the batch declares no usable schema: {error}"
                ))),
            };
            let shaped = Instant::now();
            let times = StageTimes {
                poll: received - started,
                transform: shaped - received,
                ..StageTimes::default()
            };
            let mut stages = BatchStages::default();
            stages.set(Stage::Decode, decoded - received);
            stages.set(Stage::Prepare, shaped - decoded);
            let in_flight = InFlight {
                batch,
                prepared,
                received,
                times,
                stages,
                stored: false,
                unsaved: None,
                held,
            };
            if out.send((in_flight, permit)).await.is_err() {
                break;
            }
        }
    }

    /// Shapes a batch for its streams: decoded with the plugin's schema, transformed,
    /// encoded with each stream's schema, grouped by destination.
    fn prepare(&self, from: Schema, messages: Vec<OutgoingMessage>) -> Prepared {
        let pipeline = self.pipeline;
        let streams = &pipeline.config.streams;
        let schemas = &pipeline.codecs;
        // A plugin declaring Avro or Protobuf writes with the first such stream's schema.
        let from = Codec::for_schema(from, schemas);
        let mut prepared = Prepared {
            count: messages.len(),
            bytes: messages.iter().map(|message| message.payload.len()).sum(),
            ..Prepared::default()
        };
        if !transforms::shaping_needed(pipeline.chain, &from, schemas) {
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
                    .push((Destination::new(&stream.stream, &stream.topic), batch));
            }
            return prepared;
        }
        let (mut count, mut bytes) = (0, 0);
        for message in messages {
            match transforms::shape(pipeline.chain, &from, message.payload.clone(), schemas) {
                Ok(Some(shaped)) => {
                    count += 1;
                    bytes += shaped.payloads.first().map_or(0, Bytes::len);
                    for (stream, payload) in streams.iter().zip(shaped.payloads) {
                        let topic = shaped.topic.as_deref().unwrap_or(&stream.topic);
                        let out = OutgoingMessage {
                            id: message.id,
                            headers: message.headers.clone(),
                            payload,
                        };
                        match prepared
                            .groups
                            .iter_mut()
                            .find(|(to, _)| to.stream == stream.stream && to.topic == topic)
                        {
                            Some((_, group)) => group.push(out),
                            None => prepared
                                .groups
                                .push((Destination::new(&stream.stream, topic), vec![out])),
                        }
                    }
                }
                Ok(None) => prepared.filtered += 1,
                Err(error) => {
                    let destination = streams
                        .first()
                        .map(|stream| Destination::new(&stream.stream, &stream.topic))
                        .unwrap_or_default();
                    prepared.failed.push((message, destination, error));
                }
            }
        }
        prepared.count = count;
        prepared.bytes = bytes;
        prepared.made = prepared
            .groups
            .iter()
            .flat_map(|(_, group)| group)
            .map(|message| message.payload.len())
            .sum();
        prepared
    }
}
