//! The source pipeline: one source's loop of poll, produce everywhere, persist state,
//! accept.
//!
//! A round runs four stages concurrently in one task, each a type with its own `run`,
//! joined by bounded channels:
//! - [`Poller`](poller::Poller) asks the plugin for batches and shapes them
//!   (decode, transform, encode for each stream);
//! - [`Builder`](builder::Builder) merges the batches in flight into sends and makes
//!   them ready for the bus while the previous send is in flight, waiting up to
//!   `linger_time` for more while a send is short of `batch_length` (and
//!   `max_send_bytes`); with `verified_resume` it saves the state with each unit's
//!   sends as pending before the unit goes (see `resume.rs`);
//! - [`Sender`](sender::Sender) hands failed messages to the error policy and produces
//!   the sends to Iggy, in order;
//! - [`Committer`](committer::Committer) persists the newest state of what Iggy stored
//!   (once for all the batches that are ready; with `verified_resume` it went with the
//!   sends already) and accepts those batches in order.
//!
//! As many batches are in flight as the plugin allows unsettled (see
//! `Source::MAX_UNSETTLED_BATCHES`), at most [`MAX_SOURCE_BATCHES_IN_FLIGHT`]; with one,
//! the stages take turns as a plain loop would. The first failure halts the round
//! ([`RoundState`]): what Iggy stored before it is committed, the failed batch and every
//! later one are rejected (the plugin rewinds to the failed one), and the round starts
//! again after a backoff.

mod builder;
mod committer;
mod poller;
mod sender;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use config_provider::SourceConfig;
use plugin_host::{SourceBatch, SourceInstance};
use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit, mpsc};
use transforms::{Codec, TransformChain};

use super::RetryPolicy;
use super::report::{BatchReport, StageTimes};
use crate::budget::Reservation;
use crate::bus::{Destination, MessageBus, OutgoingMessage};
use crate::control::Control;
use crate::resume::Ledger;
use crate::state::StateStore;
use crate::status::{BatchStages, ConnectorState, StatusCell};

use builder::Builder;
use committer::Committer;
use poller::Poller;
use sender::Sender;

/// Most source batches in flight (polled, not yet settled) per connector, whatever the
/// plugin allows: bounds the memory one source can hold.
const MAX_SOURCE_BATCHES_IN_FLIGHT: u32 = 16;

/// One source connector's pipeline (see the module docs).
pub(in crate::runner) struct SourcePipeline<'a> {
    pub(in crate::runner) config: &'a SourceConfig,
    pub(in crate::runner) chain: &'a TransformChain,
    /// Each stream's codec, in stream order.
    pub(in crate::runner) codecs: Vec<Codec>,
    pub(in crate::runner) bus: &'a dyn MessageBus,
    pub(in crate::runner) state: &'a StateStore,
    /// With `verified_resume`: the sends saved as pending (the state is saved before
    /// each send, not after).
    pub(in crate::runner) ledger: Option<Ledger>,
    pub(in crate::runner) retry: RetryPolicy,
    pub(in crate::runner) status: &'a StatusCell,
    /// What to log per batch (`verbose`, `benchmark`).
    pub(in crate::runner) report: BatchReport,
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

/// What the stages of one round share besides their channels.
#[derive(Default)]
struct RoundState {
    /// The first failure; every stage stops taking new work once it is set.
    halted: Mutex<Option<Halt>>,
    /// Whether the sender has a send in flight (its batches reach the committer soon).
    send_in_flight: AtomicBool,
}

impl RoundState {
    /// Halts the round, unless it halted already (the first reason stays).
    fn halt(&self, why: Halt) {
        if let Ok(mut halted) = self.halted.lock()
            && halted.is_none()
        {
            *halted = Some(why);
        }
    }

    fn is_halted(&self) -> bool {
        self.halted.lock().map_or(true, |halted| halted.is_some())
    }

    fn set_send_in_flight(&self, in_flight: bool) {
        self.send_in_flight.store(in_flight, Ordering::Relaxed);
    }

    fn send_in_flight(&self) -> bool {
        self.send_in_flight.load(Ordering::Relaxed)
    }

    fn into_halt(self) -> Option<Halt> {
        self.halted.into_inner().ok().flatten()
    }
}

/// A batch the poller took from the plugin, on its way to the sender and committer.
struct InFlight<'s> {
    batch: SourceBatch<'s>,
    /// The shaped messages, or why the batch cannot be produced at all.
    prepared: Result<Prepared, Halt>,
    received: Instant,
    /// How long each stage took for it so far.
    times: StageTimes,
    /// The same in upstream's stages (see `Stage`), for the status.
    stages: BatchStages,
    /// Whether Iggy stored it (set by the sender).
    stored: bool,
    /// For the last batch of a send Iggy stored: the send's place among those allowed
    /// beyond the saved state (set by the sender, released once the state is written).
    unsaved: Option<OwnedSemaphorePermit>,
    /// What it holds against the connector's memory budget: its payloads (lent by the
    /// plugin until it is settled), the copies shaping made, and for a unit's first
    /// batch the requests made of the unit.
    held: Reservation,
}

/// A batch in flight with its place among the unsettled ones (given back once the
/// plugin has settled it).
type Held<'s, 'r> = (InFlight<'s>, SemaphorePermit<'r>);

/// A source batch ready to send.
#[derive(Debug, Default)]
struct Prepared {
    /// Messages by destination.
    groups: Vec<(Destination, Vec<OutgoingMessage>)>,
    /// Messages that will be delivered, and their bytes (as encoded for the first
    /// stream).
    count: usize,
    bytes: usize,
    /// Messages a transform filtered out.
    filtered: usize,
    /// Messages that failed to shape, with where they were going and why.
    failed: Failed,
    /// Payload bytes shaping made (0 when the payloads went untouched).
    made: usize,
}

/// Messages that failed to shape, each with where it was going and why.
type Failed = Vec<(OutgoingMessage, Destination, String)>;

impl SourcePipeline<'_> {
    /// Runs rounds until stop is requested, or the source fails (a fatal error, or
    /// `retry.attempts` rounds in a row that delivered nothing).
    pub(in crate::runner) async fn run(&self, source: &SourceInstance, mut control: Control) {
        let (status, retry) = (self.status, self.retry);
        for stream in &self.config.streams {
            let to = Destination::new(&stream.stream, &stream.topic);
            let ensured = retry
                .run(status, "create topic", || self.bus.ensure_topic(&to))
                .await;
            if let Err(error) = ensured {
                status.fail(format!("cannot reach topic {to}: {error}"));
                return;
            }
        }
        status.set_state(ConnectorState::Running);
        // Topics known to exist; `route` may name others, created on first use.
        let mut ensured: HashSet<Destination> = self
            .config
            .streams
            .iter()
            .map(|stream| Destination::new(&stream.stream, &stream.topic))
            .collect();
        let depth = source
            .plugin()
            .max_unsettled_batches()
            .clamp(1, MAX_SOURCE_BATCHES_IN_FLIGHT) as usize;
        // Consecutive rounds that ended without delivering a batch.
        let mut failures = 0;
        loop {
            let (round, known) = self.run_round(source, &mut control, depth, ensured).await;
            ensured = known;
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
            tracing::warn!(connector = %self.config.common.key, %error, attempt = failures, "batch rejected; retrying");
            status.retried(error);
            tokio::select! {
                () = control.stopping() => return,
                () = tokio::time::sleep(retry.backoff(failures)) => {}
            }
        }
    }

    /// Polls, produces and commits batches until stop is requested or one fails;
    /// gives back the topics known to exist.
    async fn run_round(
        &self,
        source: &SourceInstance,
        control: &mut Control,
        depth: usize,
        ensured: HashSet<Destination>,
    ) -> (Round, HashSet<Destination>) {
        let round = RoundState::default();
        let unsettled = tokio::sync::Semaphore::new(depth);
        let (to_build, building) = mpsc::channel(depth);
        let (to_send, sending) = mpsc::channel(1);
        let (to_commit, committing) = mpsc::channel(depth);
        let poller = Poller {
            pipeline: self,
            source,
            round: &round,
            unsettled: &unsettled,
        };
        let builder = Builder {
            pipeline: self,
            round: &round,
            depth,
            ensured,
        };
        let sender = Sender::new(self, &round);
        let committer = Committer {
            pipeline: self,
            source,
            round: &round,
            depth,
        };
        let ((), ensured, (), accepted) = tokio::join!(
            poller.run(control, to_build),
            builder.run(building, to_send),
            sender.run(sending, to_commit),
            committer.run(committing),
        );
        let round = match round.into_halt() {
            Some(halt) => Round::Halted { halt, accepted },
            None => Round::Stopped,
        };
        (round, ensured)
    }

    /// On a stop with `verified_resume`: saves the confirmed state without pending
    /// sends, so the next start need not ask Iggy (a failure only means it will).
    async fn save_final_state(&self) {
        let Some(record) = self.ledger.as_ref().and_then(Ledger::final_record) else {
            return;
        };
        if let Err(error) = self
            .state
            .write_saved(&self.config.common.key, record)
            .await
        {
            tracing::warn!(connector = %self.config.common.key, %error, "cannot save the final source state; the next start looks for the last sends in Iggy");
        }
    }
}

/// The newest state among batches.
fn newest_state<P>(taken: &[(InFlight<'_>, P)]) -> Option<Vec<u8>> {
    taken
        .iter()
        .rev()
        .find_map(|(in_flight, _)| in_flight.batch.state())
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_halt_of_a_round_is_the_one_reported() {
        let round = RoundState::default();
        assert!(!round.is_halted());
        round.halt(Halt::Retry("the send failed".to_owned()));
        round.halt(Halt::Fatal("a later batch declares no schema".to_owned()));
        assert!(round.is_halted(), "every stage stops taking work");
        match round.into_halt() {
            Some(Halt::Retry(reason)) => assert_eq!(reason, "the send failed"),
            other => panic!("the first halt is kept, got {other:?}"),
        }
    }
}
