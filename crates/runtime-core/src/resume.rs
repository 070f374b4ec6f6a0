//! Verified resume: a source's state is saved with each send before the send goes, and
//! a restart asks Iggy which of those sends it stored.
//!
//! Saving the state only after Iggy answered puts a disk flush between every two sends
//! (or, with `max_unsaved_sends` above 1, lets a crash re-produce that many sends).
//! Instead, the builder saves `{confirmed state, pending sends}` while the previous send
//! is in flight, each pending send naming the state it leads to and a marker carried by
//! its last message ([`SEND_MARKER_HEADER`]). After a crash, [`resume_state`] walks the
//! pending sends in order and adopts the state of each whose marker Iggy has: sends go
//! one after another on one connection, so a stored send means every one before it was
//! stored too. A marker not found (or a bus that cannot look) stops the walk: the
//! source produces that send again, so the search can only cause duplicates, never a
//! skipped message.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use connector_sdk::{HeaderKind, OwnedHeader};

use crate::bus::{Destination, MessageBus, OutgoingMessage, SEND_MARKER_HEADER};
use crate::runner::RetryPolicy;
use crate::state::{PendingSend, SavedState, StateStore};
use crate::status::StatusCell;

/// What one source's pipeline knows about its sends: the state Iggy's answers
/// confirmed, and the sends saved as pending (by the builder) whose answers are not in.
#[derive(Debug)]
pub(crate) struct Ledger {
    inner: Mutex<LedgerInner>,
    /// Keys the markers: 128 random-looking bits per send, different in every process.
    markers: RandomState,
}

#[derive(Debug)]
struct LedgerInner {
    confirmed: Option<Vec<u8>>,
    /// Oldest first, each with the number of the unit that carries it.
    pending: VecDeque<(u64, PendingSend)>,
    next_unit: u64,
    /// Whether `confirmed` moved in this run: records saved so far may hold it only as
    /// a pending send's state, or (after a unit with nothing to send) not at all.
    moved: bool,
}

impl Ledger {
    /// A ledger starting from the state the source is opened with.
    pub(crate) fn new(confirmed: Option<Vec<u8>>) -> Self {
        Ledger {
            inner: Mutex::new(LedgerInner {
                confirmed,
                pending: VecDeque::new(),
                next_unit: 0,
                moved: false,
            }),
            markers: RandomState::new(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the last message of each of a unit's sends and records the sends as
    /// pending, each leading to its entry of `states` (`None`: no batch is complete
    /// yet). Returns the unit's number and the record to save before the sends go;
    /// `None` when there is nothing to send.
    pub(crate) fn mark(
        &self,
        sends: &mut [(Destination, Vec<OutgoingMessage>)],
        states: Vec<Option<Vec<u8>>>,
    ) -> Option<(u64, SavedState)> {
        if sends.is_empty() {
            return None;
        }
        let mut inner = self.inner();
        let unit = inner.next_unit;
        inner.next_unit += 1;
        for (index, ((to, messages), state)) in sends.iter_mut().zip(states).enumerate() {
            let Some(last) = messages.last_mut() else {
                continue;
            };
            let marker = self.marker(unit, index);
            last.headers.push(OwnedHeader {
                key: SEND_MARKER_HEADER.to_owned(),
                kind: HeaderKind::Uint128,
                value: marker.to_le_bytes().to_vec(),
            });
            inner.pending.push_back((
                unit,
                PendingSend {
                    state,
                    stream: to.stream.clone(),
                    topic: to.topic.clone(),
                    marker,
                },
            ));
        }
        let record = SavedState {
            state: inner.confirmed.clone(),
            pending: inner.pending.iter().map(|(_, send)| send.clone()).collect(),
        };
        Some((unit, record))
    }

    /// 128 bits unique to a unit's send: its place hashed under the process's random
    /// key.
    fn marker(&self, unit: u64, send: usize) -> u128 {
        let half = |which: u8| u128::from(self.markers.hash_one((unit, send, which)));
        half(0) << 64 | half(1)
    }

    /// Iggy stored the unit (`None`: one without sends) whose batches lead to `state`.
    pub(crate) fn stored(&self, unit: Option<u64>, state: Option<Vec<u8>>) {
        let mut inner = self.inner();
        if let Some(unit) = unit {
            inner.pending.retain(|(pending, _)| *pending > unit);
        }
        if state.is_some() {
            inner.confirmed = state;
            inner.moved = true;
        }
    }

    /// A round ended: what it left pending was not sent (or failed), and its batches
    /// are produced again.
    pub(crate) fn forget_pending(&self) {
        self.inner().pending.clear();
    }

    /// The record to save when the source stops, unless nothing happened since the
    /// last one (then the saved record is already the confirmed state alone).
    pub(crate) fn final_record(&self) -> Option<SavedState> {
        let mut inner = self.inner();
        if !inner.moved && inner.pending.is_empty() {
            return None;
        }
        inner.moved = false;
        inner.pending.clear();
        Some(SavedState::confirmed(inner.confirmed.clone()))
    }
}

/// The state to open a source with: the saved state, moved past every pending send
/// Iggy is found to have stored (oldest first, stopping at the first not found). When
/// sends were pending, the result is saved at once, so a second crash does not depend
/// on the markers still being among the topic's newest messages.
pub(crate) async fn resume_state(
    key: &str,
    state: &StateStore,
    bus: &dyn MessageBus,
    retry: RetryPolicy,
    status: &StatusCell,
) -> std::io::Result<Option<Vec<u8>>> {
    let saved = state.read_saved(key).await?;
    if saved.pending.is_empty() {
        return Ok(saved.state);
    }
    let pending = saved.pending.len();
    let mut resumed = saved.state;
    let mut found = 0;
    for send in saved.pending {
        let to = Destination::new(&send.stream, &send.topic);
        let looked = retry
            .run(status, "look for the last sends", || {
                bus.find_marker(&to, send.marker)
            })
            .await;
        match looked {
            Ok(Some(true)) => {
                found += 1;
                if send.state.is_some() {
                    resumed = send.state;
                }
            }
            Ok(Some(false)) => break,
            Ok(None) => {
                tracing::warn!(connector = %key, "the bus cannot tell which sends Iggy stored; producing them again");
                break;
            }
            Err(error) => {
                tracing::warn!(connector = %key, stream = %send.stream, topic = %send.topic, %error, "cannot look for the last sends; producing them again");
                break;
            }
        }
    }
    tracing::info!(
        connector = %key,
        pending,
        found,
        "resumed after the sends Iggy stored"
    );
    state
        .write_saved(key, SavedState::confirmed(resumed.clone()))
        .await?;
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sends(lengths: &[usize]) -> Vec<(Destination, Vec<OutgoingMessage>)> {
        lengths
            .iter()
            .map(|length| {
                let message = OutgoingMessage {
                    id: Some(1),
                    headers: vec![OwnedHeader::string("kept", "yes")],
                    payload: Bytes::from_static(b"m"),
                };
                (Destination::new("s", "t"), vec![message; *length])
            })
            .collect()
    }

    fn marker_of(message: &OutgoingMessage) -> Option<u128> {
        message
            .headers
            .iter()
            .find(|header| header.key == SEND_MARKER_HEADER)
            .map(|header| u128::from_le_bytes(header.value.clone().try_into().unwrap()))
    }

    #[test]
    fn each_send_s_last_message_is_marked_and_recorded_as_pending() {
        let ledger = Ledger::new(Some(b"start".to_vec()));
        let mut first = sends(&[2, 1]);
        let (unit, record) = ledger
            .mark(&mut first, vec![None, Some(b"a".to_vec())])
            .unwrap();
        assert_eq!(record.state.as_deref(), Some(&b"start"[..]));
        assert_eq!(record.pending.len(), 2);
        for ((_, messages), pending) in first.iter().zip(&record.pending) {
            assert_eq!(
                marker_of(&messages[messages.len() - 1]),
                Some(pending.marker)
            );
            assert!(
                messages[..messages.len() - 1]
                    .iter()
                    .all(|m| marker_of(m).is_none())
            );
            assert_eq!(messages[0].headers[0], OwnedHeader::string("kept", "yes"));
        }
        assert_ne!(record.pending[0].marker, record.pending[1].marker);
        assert_eq!(record.pending[1].state.as_deref(), Some(&b"a"[..]));

        // The next unit is saved while the first is in flight: both are pending.
        let (_, record) = ledger
            .mark(&mut sends(&[1]), vec![Some(b"b".to_vec())])
            .unwrap();
        assert_eq!(record.pending.len(), 3);
        ledger.stored(Some(unit), Some(b"a".to_vec()));
        let (_, record) = ledger
            .mark(&mut sends(&[1]), vec![Some(b"c".to_vec())])
            .unwrap();
        assert_eq!(record.state.as_deref(), Some(&b"a"[..]));
        let leads_to: Vec<_> = record.pending.iter().map(|p| p.state.clone()).collect();
        assert_eq!(leads_to, [Some(b"b".to_vec()), Some(b"c".to_vec())]);
        assert!(ledger.mark(&mut Vec::new(), Vec::new()).is_none());
    }

    #[test]
    fn a_stop_saves_the_confirmed_state_once_and_forgets_what_was_not_sent() {
        let ledger = Ledger::new(None);
        assert_eq!(ledger.final_record(), None, "nothing happened");
        ledger.mark(&mut sends(&[1]), vec![Some(b"x".to_vec())]);
        ledger.forget_pending();
        assert_eq!(
            ledger.final_record(),
            None,
            "nothing stored, nothing pending"
        );
        let (unit, _) = ledger
            .mark(&mut sends(&[1]), vec![Some(b"y".to_vec())])
            .unwrap();
        ledger.stored(Some(unit), Some(b"y".to_vec()));
        // A unit without sends (all filtered) moves the state too.
        ledger.stored(None, Some(b"z".to_vec()));
        assert_eq!(
            ledger.final_record(),
            Some(SavedState::confirmed(Some(b"z".to_vec())))
        );
        assert_eq!(ledger.final_record(), None, "saved already");
    }
}
