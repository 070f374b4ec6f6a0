//! The third stage of a source round: hands the messages that failed to shape to the
//! error policy, then produces the unit's sends to Iggy, in order, and marks what Iggy
//! stored for the committer.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};

use super::builder::{Sends, Unit};
use super::{Failed, Halt, Held, RoundState, SourcePipeline, newest_state};
use crate::runner::error_policy::{ErrorHandling, Origin};
use crate::status::Stage;

/// Produces sends to Iggy.
pub(super) struct Sender<'r> {
    pipeline: &'r SourcePipeline<'r>,
    round: &'r RoundState,
    /// One permit per send Iggy may hold beyond the saved state (`max_unsaved_sends`):
    /// the sender takes one before each send, it travels with the send's last batch,
    /// and the committer lets it go once the state covering it is written. So a crash
    /// makes the source produce again at most that many.
    unsaved_sends: Arc<Semaphore>,
}

impl<'r> Sender<'r> {
    pub(super) fn new(pipeline: &'r SourcePipeline<'r>, round: &'r RoundState) -> Self {
        let max_unsaved = pipeline.config.max_unsaved_sends.max(1) as usize;
        Sender {
            pipeline,
            round,
            unsaved_sends: Arc::new(Semaphore::new(max_unsaved)),
        }
    }

    /// Sends units until the builder is done or the committer is gone.
    pub(super) async fn run<'s>(
        self,
        mut input: mpsc::Receiver<Unit<'s, 'r>>,
        out: mpsc::Sender<Held<'s, 'r>>,
    ) {
        while let Some(unit) = input.recv().await {
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
            let unsaved = match &self.pipeline.ledger {
                Some(_) => None,
                None => self.unsaved_sends.clone().acquire_owned().await.ok(),
            };
            if !self.round.is_halted() {
                let started = Instant::now();
                self.round.set_send_in_flight(true);
                let delivered = match sends {
                    Ok(sends) => self.deliver(failed, sends).await,
                    Err(why) => Err(why),
                };
                self.round.set_send_in_flight(false);
                let sent = started.elapsed();
                match delivered {
                    Ok(()) => {
                        if let Some(ledger) = &self.pipeline.ledger {
                            ledger.stored(marked, newest_state(&taken[..usable]));
                        }
                        for (in_flight, _) in &mut taken[..usable] {
                            in_flight.stored = true;
                            in_flight.times.send = sent;
                            in_flight.stages.set(Stage::IggySend, sent);
                        }
                        if let Some((last, _)) = taken[..usable].last_mut() {
                            last.unsaved = unsaved;
                        }
                    }
                    Err(why) => self.round.halt(why),
                }
                if let Some(why) = halt_after {
                    self.round.halt(why);
                }
            } else {
                // Unsent, their payloads (maybe lent from the plugin) go now: the
                // committer's settle waits for them.
                drop((failed, sends));
            }
            for item in taken {
                if out.send(item).await.is_err() {
                    break;
                }
            }
        }
    }

    /// Hands the failed messages to the error policy, then makes the sends, in order;
    /// the first failure ends it (the batches are then rejected and produced again
    /// whole).
    async fn deliver(&self, failed: Failed, sends: Sends) -> Result<(), Halt> {
        let pipeline = self.pipeline;
        let handling = ErrorHandling {
            policy: pipeline.config.common.error_policy,
            dead_letter: pipeline.config.common.dead_letter.as_ref(),
            bus: pipeline.bus,
            retry: pipeline.retry,
            status: pipeline.status,
        };
        for (message, to, error) in failed {
            let origin = Origin {
                connector: &pipeline.config.common.key,
                stream: &to.stream,
                topic: &to.topic,
                partition: None,
                offset: None,
            };
            handling
                .apply(&origin, message, &error)
                .await
                // The same message would fail again: no retry, the source fails.
                .map_err(Halt::Fatal)?;
        }
        for (to, prepared) in sends {
            if let Err(error) = pipeline.bus.send_prepared(&to, prepared).await {
                return Err(Halt::Retry(format!("sending to {to} failed: {error}")));
            }
        }
        Ok(())
    }
}
