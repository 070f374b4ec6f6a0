//! The second stage of a source round: merges the batches in flight into sends, cuts
//! them to each stream's limits and makes them ready for the bus while the previous
//! send is in flight. With `verified_resume` it marks each unit's sends and saves them
//! as pending before the unit goes on.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::{Failed, Halt, Held, Prepared, RoundState, SourcePipeline, newest_state};
use crate::bus::{Destination, OutgoingMessage, PreparedSend};
use crate::status::Stage;

/// Makes batches into sends.
pub(super) struct Builder<'r> {
    pub(super) pipeline: &'r SourcePipeline<'r>,
    pub(super) round: &'r RoundState,
    /// Most batches in flight.
    pub(super) depth: usize,
    /// Topics known to exist; `route` may name others, created on first use.
    pub(super) ensured: HashSet<Destination>,
}

impl<'r> Builder<'r> {
    /// Builds units until the poller is done or the sender is gone; gives back the
    /// topics known to exist.
    pub(super) async fn run<'s>(
        mut self,
        mut input: mpsc::Receiver<Held<'s, 'r>>,
        out: mpsc::Sender<Unit<'s, 'r>>,
    ) -> HashSet<Destination> {
        let pipeline = self.pipeline;
        let (fill, fill_bytes, linger) = self.send_limits();
        while let Some(first) = input.recv().await {
            let mut taken = vec![first];
            // Small batches go out together: take those that are ready, and wait up
            // to `linger_time` for more while the send is short of `batch_length`
            // (never for more than may be unsettled, or the poller could not add).
            if !self.round.is_halted() && taken[0].0.prepared.is_ok() {
                let deadline = tokio::time::Instant::now() + linger;
                while taken.len() < self.depth {
                    let (count, bytes) = pending(&taken);
                    let short = count < fill && bytes < fill_bytes;
                    // With a ledger, a full unit still takes the batches that are
                    // ready (cut into several sends): one state write covers them,
                    // so the longer a write takes, the fewer there are.
                    if !short && pipeline.ledger.is_none() {
                        break;
                    }
                    let next = match input.try_recv() {
                        Ok(next) => Some(next),
                        Err(TryRecvError::Disconnected) => None,
                        Err(TryRecvError::Empty) if linger.is_zero() || !short => None,
                        Err(TryRecvError::Empty) => tokio::select! {
                            next = input.recv() => next,
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
            let unit = self.build(taken).await;
            if out.send(unit).await.is_err() {
                break;
            }
        }
        self.ensured
    }

    /// Makes the batches taken into one unit of sends.
    async fn build<'s>(&mut self, mut taken: Vec<Held<'s, 'r>>) -> Unit<'s, 'r> {
        let pipeline = self.pipeline;
        let started = Instant::now();
        let usable = taken
            .iter()
            .take_while(|(in_flight, _)| in_flight.prepared.is_ok())
            .count();
        let mut marked = None;
        // How long the pending state took to write (its own stage, not preparing).
        let mut saved_in = None;
        let (failed, sends, halt_after) = if self.round.is_halted() {
            (Vec::new(), Ok(Vec::new()), None)
        } else {
            let merged = take_messages(
                taken[..usable]
                    .iter_mut()
                    .filter_map(|(in_flight, _)| in_flight.prepared.as_mut().ok()),
            );
            // The batch after the usable ones cannot be produced: the round halts once
            // they are sent.
            let halt_after = taken.get_mut(usable).and_then(|(in_flight, _)| {
                std::mem::replace(&mut in_flight.prepared, Ok(Prepared::default())).err()
            });
            let single_destination = merged.groups.len() == 1;
            let counts = merged.counts;
            let mut chunks = self.cut_sends(merged.groups);
            let mut record = None;
            if let Some(ledger) = &pipeline.ledger {
                let states = completed_batches(&chunks, &counts, single_destination)
                    .into_iter()
                    .map(|completed| completed.and_then(|batches| newest_state(&taken[..batches])))
                    .collect();
                if let Some((unit, saved)) = ledger.mark(&mut chunks, states) {
                    marked = Some(unit);
                    record = Some(saved);
                }
            }
            let mut sends = self.convert_sends(chunks).await;
            // The requests copy the payloads: held with the unit's first batch.
            if let (Ok(sends), Some((first, _))) = (&sends, taken.first_mut()) {
                first
                    .held
                    .grow(sends.iter().map(|(_, send)| send.len()).sum());
            }
            // Saved while the previous send is in flight: this one may go only once a
            // restart would know to look for it.
            let saving = record.filter(|_| sends.is_ok());
            if let Some(record) = saving {
                let writing = Instant::now();
                let written = pipeline
                    .state
                    .write_saved(&pipeline.config.common.key, record)
                    .await;
                saved_in = Some(writing.elapsed());
                if let Err(error) = written {
                    sends = Err(Halt::Retry(format!(
                        "cannot persist the source state: {error}"
                    )));
                }
            }
            (merged.failed, sends, halt_after)
        };
        let built = started.elapsed();
        let preparing = built.saturating_sub(saved_in.unwrap_or_default());
        for (in_flight, _) in &mut taken {
            in_flight.times.transform += built;
            in_flight.stages.add(Stage::Prepare, preparing);
            if let Some(saved_in) = saved_in {
                in_flight.stages.set(Stage::StateSave, saved_in);
            }
        }
        Unit {
            taken,
            usable,
            failed,
            sends,
            halt_after,
            marked,
        }
    }

    /// When a send is full (messages, payload bytes), and how long it may wait to
    /// fill: the smallest `batch_length`, `max_send_bytes` and `linger_time` of the
    /// connector's streams.
    fn send_limits(&self) -> (usize, usize, Duration) {
        let streams = &self.pipeline.config.streams;
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

    /// Cuts each destination's messages into sends of at most the stream's
    /// `batch_length` messages and `max_send_bytes` payload bytes (but always one
    /// message).
    fn cut_sends(&self, groups: Vec<Destined>) -> Chunks {
        let mut sends = Vec::new();
        for (to, segments) in groups {
            let configured = self
                .pipeline
                .config
                .streams
                .iter()
                .find(|configured| configured.stream == to.stream);
            let limit = configured.map_or(usize::MAX, |configured| {
                configured.batch_length.max(1) as usize
            });
            let max_bytes = configured
                .and_then(|configured| configured.max_send_bytes)
                .map_or(usize::MAX, |bytes| {
                    usize::try_from(bytes).unwrap_or(usize::MAX)
                });
            for chunk in cut(segments, limit, max_bytes) {
                sends.push((to.clone(), chunk));
            }
        }
        sends
    }

    /// Converts cut sends for the bus.
    async fn convert_sends(&mut self, chunks: Chunks) -> Result<Sends, Halt> {
        let bus = self.pipeline.bus;
        let mut sends = Vec::with_capacity(chunks.len());
        for (to, chunk) in chunks {
            // A routed topic is created on first use, before its send is made ready
            // (making it ready asks Iggy for the topic's partitions).
            if !self.ensured.contains(&to) {
                bus.ensure_topic(&to).await.map_err(|error| {
                    Halt::Retry(format!("cannot create routed topic {to}: {error}"))
                })?;
                self.ensured.insert(to.clone());
            }
            let prepared = bus
                .prepare_send(&to, chunk)
                .await
                .map_err(|error| Halt::Retry(format!("sending to {to} failed: {error}")))?;
            sends.push((to, prepared));
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

/// A destination with the messages of each batch going there.
type Destined = (Destination, Vec<Vec<OutgoingMessage>>);

/// The sends of a unit, in order: each destination with one send.
pub(super) type Sends = Vec<(Destination, PreparedSend)>;

/// Sends cut but not yet converted for the bus.
type Chunks = Vec<(Destination, Vec<OutgoingMessage>)>;

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
pub(super) struct Unit<'s, 'r> {
    pub(super) taken: Vec<Held<'s, 'r>>,
    /// How many of `taken` (from the first) the sends carry.
    pub(super) usable: usize,
    /// Messages for the error policy, before the sends.
    pub(super) failed: Failed,
    /// The sends in order, or why they could not be made.
    pub(super) sends: Result<Sends, Halt>,
    /// Why the round halts after the sends (a batch that cannot be produced).
    pub(super) halt_after: Option<Halt>,
    /// With a ledger: the number it gave the unit's sends (`None`: nothing to send).
    pub(super) marked: Option<u64>,
}

/// Messages and payload bytes the usable batches among `taken` will send (as encoded
/// for the first stream).
fn pending(taken: &[Held<'_, '_>]) -> (usize, usize) {
    taken
        .iter()
        .filter_map(|(in_flight, _)| in_flight.prepared.as_ref().ok())
        .fold((0, 0), |(count, bytes), prepared| {
            (count + prepared.count, bytes + prepared.bytes)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunks(lengths: &[usize]) -> Chunks {
        lengths
            .iter()
            .map(|length| {
                let message = OutgoingMessage {
                    id: None,
                    headers: Vec::new(),
                    payload: Bytes::from_static(b"m"),
                };
                (Destination::new("s", "t"), vec![message; *length])
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
