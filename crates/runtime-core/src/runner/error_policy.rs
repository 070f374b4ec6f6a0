//! The error policy: what happens to a message that still fails after the retries, in
//! the plugin, a decoder or a transform. `fail` fails the connector (nothing after the
//! message is committed), `skip` passes over it, `dead_letter` sends it to the
//! `[dead_letter]` topic with headers naming the error and its origin, and it counts as
//! handled once Iggy stored it.

use config_provider::{DeadLetterTarget, ErrorPolicy};
use connector_sdk::OwnedHeader;

use super::RetryPolicy;
use crate::bus::{Destination, MessageBus, OutgoingMessage};
use crate::dead_letter;
use crate::status::StatusCell;

/// Where a failed message came from (sinks) or was going (sources).
pub(super) struct Origin<'a> {
    pub(super) connector: &'a str,
    pub(super) stream: &'a str,
    pub(super) topic: &'a str,
    pub(super) partition: Option<u32>,
    pub(super) offset: Option<u64>,
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

/// The error policy of a connector, with what it needs to apply it.
pub(super) struct ErrorHandling<'a> {
    pub(super) policy: ErrorPolicy,
    /// Where `dead_letter` sends messages.
    pub(super) dead_letter: Option<&'a DeadLetterTarget>,
    pub(super) bus: &'a dyn MessageBus,
    pub(super) retry: RetryPolicy,
    pub(super) status: &'a StatusCell,
}

impl ErrorHandling<'_> {
    /// Applies the policy to one message: `Ok` when it was skipped or its dead letter
    /// stored; `Err(reason)` when the connector must fail.
    pub(super) async fn apply(
        &self,
        origin: &Origin<'_>,
        message: OutgoingMessage,
        error: &str,
    ) -> Result<(), String> {
        let connector = origin.connector;
        match (self.policy, self.dead_letter) {
            (ErrorPolicy::DeadLetter, Some(target)) => {
                let letter = dead_letter_message(origin, message, error);
                let to = Destination::new(&target.stream, &target.topic);
                let sent = self
                    .retry
                    .run(self.status, "send dead letter", || {
                        self.bus.send(&to, vec![letter.clone()])
                    })
                    .await;
                if let Err(send_error) = sent {
                    return Err(format!(
                        "{origin} failed ({error}) and could not go to the dead letter topic {to}: {send_error}"
                    ));
                }
                tracing::warn!(%connector, origin = %origin, %error, dead_letter_stream = %target.stream, dead_letter_topic = %target.topic, "message sent to the dead letter topic");
                self.status.dead_lettered(error.to_owned());
                Ok(())
            }
            (ErrorPolicy::Skip, _) => {
                tracing::warn!(%connector, origin = %origin, %error, "message skipped");
                self.status.skipped(error.to_owned());
                Ok(())
            }
            _ => Err(format!("{origin} failed: {error}")),
        }
    }
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
