//! The last stage of a source round: persists the newest state of the batches Iggy
//! stored (one write for all that are ready) and settles every batch with the plugin,
//! in order: accepted when stored and persisted, rejected otherwise.

use std::time::Instant;

use plugin_host::SourceInstance;
use tokio::sync::mpsc;

use super::{Halt, Held, InFlight, RoundState, SourcePipeline};
use crate::status::Stage;

/// Commits what Iggy stored.
pub(super) struct Committer<'r, 's> {
    pub(super) pipeline: &'r SourcePipeline<'r>,
    pub(super) source: &'s SourceInstance,
    pub(super) round: &'r RoundState,
    /// Most batches in flight.
    pub(super) depth: usize,
}

impl<'r, 's> Committer<'r, 's> {
    /// Commits until the sender is done; true when any batch was accepted.
    pub(super) async fn run(self, mut input: mpsc::Receiver<Held<'s, 'r>>) -> bool {
        let (pipeline, round, depth) = (self.pipeline, self.round, self.depth);
        let mut accepted = false;
        let mut ready = Vec::with_capacity(depth);
        // Set when the plugin refused an accept: nothing after it is accepted.
        let mut refused = false;
        while let Some(first) = input.recv().await {
            ready.push(first);
            while let Ok(more) = input.try_recv() {
                ready.push(more);
            }
            // Group commit: while a send is in flight, its batches will be ready as
            // soon as Iggy answers, so wait for them and let one state write cover
            // both, holding back at most half of what may be unsettled (the poller
            // keeps the rest to stay ahead of the sender). An idle sender means
            // nothing is coming: write at once.
            while ready.len() < depth / 2
                && pipeline.ledger.is_none()
                && round.send_in_flight()
                && ready.last().is_some_and(|(in_flight, _)| in_flight.stored)
                && !round.is_halted()
            {
                let Some(more) = input.recv().await else {
                    break;
                };
                ready.push(more);
                while let Ok(more) = input.try_recv() {
                    ready.push(more);
                }
            }
            let started = Instant::now();
            // Batches are in order and a halt rejects everything after it, so the
            // stored ones come first; their newest state covers them all.
            let mut stored = ready
                .iter()
                .take_while(|(in_flight, _)| in_flight.stored)
                .count();
            // With a ledger the state went to disk with the sends already.
            let state = match pipeline.ledger {
                Some(_) => None,
                None => ready[..stored]
                    .iter()
                    .rev()
                    .find_map(|(in_flight, _)| in_flight.batch.state()),
            };
            // How long the write took, when one covers the stored batches.
            let mut saved_in = None;
            if let Some(state) = state {
                match pipeline
                    .state
                    .write(&pipeline.config.common.key, state.to_vec())
                    .await
                {
                    Ok(()) => saved_in = Some(started.elapsed()),
                    Err(error) => {
                        round.halt(Halt::Retry(format!(
                            "cannot persist the source state: {error}"
                        )));
                        stored = 0;
                    }
                }
            }
            // Written (or failed, which halts the round): the sends may go on.
            for (in_flight, _) in &mut ready {
                in_flight.unsaved = None;
            }
            // One hand-over to the plugin for the whole group (in order); the permits
            // go back once the plugin has answered.
            let mut settling = Vec::with_capacity(ready.len());
            let mut outcomes = Vec::with_capacity(ready.len());
            // The plugin frees the batches' payloads when it has settled them.
            let mut held = Vec::with_capacity(ready.len());
            for (index, (in_flight, permit)) in ready.drain(..).enumerate() {
                let InFlight {
                    batch,
                    prepared,
                    received,
                    times,
                    mut stages,
                    held: reservation,
                    ..
                } = in_flight;
                held.push(reservation);
                // Rejecting rewinds the source (to the first of those rejected).
                let accept = index < stored && !refused;
                if let (true, Some(saved_in)) = (accept, saved_in) {
                    stages.set(Stage::StateSave, saved_in);
                }
                settling.push((batch, accept));
                // Only the counts are kept: payloads a halt left unsent are lent from
                // the plugin, and the settle waits until they are dropped.
                let counts = prepared
                    .ok()
                    .map(|prepared| (prepared.count, prepared.bytes));
                outcomes.push((accept, counts, received, times, stages, permit));
            }
            let answers = self.source.settle_all(settling).await;
            drop(held);
            let committed = started.elapsed();
            for ((accept, counts, received, mut times, stages, permit), answer) in
                outcomes.into_iter().zip(answers)
            {
                // A reject's answer changes nothing: the round ends and the source is
                // retried or closed.
                if accept {
                    match answer {
                        Ok(()) => {
                            accepted = true;
                            if let Some((count, bytes)) = counts {
                                pipeline.status.delivered(
                                    count,
                                    bytes,
                                    received.elapsed(),
                                    &stages,
                                );
                                times.commit = committed;
                                pipeline.report.batch(
                                    &pipeline.config.common.key,
                                    None,
                                    count,
                                    bytes,
                                    &times,
                                );
                            }
                        }
                        Err(error) => {
                            if !refused {
                                round.halt(Halt::Fatal(format!(
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
        accepted
    }
}
