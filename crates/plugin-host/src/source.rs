//! Source instances and the batches they produce.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use connector_sdk::abi::{SourceBatchView, SourceVTable};
use connector_sdk::{Message, Schema};

use crate::call::{Answer, InstancePtr, OpenInstance, OrphanSlot, call_done, call_poll};
use crate::error::{CallError, CallErrorKind};
use crate::loan::{Loan, Loans};
use crate::plugin::Plugin;

/// An open source. Closing it consumes the handle, so no call can follow the close;
/// dropping it unclosed closes it in the background.
#[derive(Debug)]
pub struct SourceInstance {
    plugin: Plugin,
    vtable: &'static SourceVTable,
    instance: OpenInstance,
    orphan: OrphanSlot,
    /// Payload memory of unsettled batches lent out by [`SourceBatch::payloads`].
    loans: Arc<Loans>,
}

impl SourceInstance {
    pub(crate) fn new(
        plugin: Plugin,
        vtable: &'static SourceVTable,
        instance: InstancePtr,
        key: &str,
    ) -> Self {
        SourceInstance {
            plugin,
            vtable,
            instance: OpenInstance::new(instance, vtable.close, key),
            orphan: Arc::new(Mutex::new(Vec::new())),
            loans: Arc::default(),
        }
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The connector key the instance was opened with.
    pub fn key(&self) -> &str {
        self.instance.key()
    }

    /// Waits for the source's next batch. Up to [`Plugin::max_unsettled_batches`]
    /// batches may be unsettled at once; settle them in the order they were polled,
    /// with [`SourceBatch::accept`] or [`SourceBatch::reject`]. After a reject, the later
    /// unsettled batches can only be rejected. A batch dropped unsettled is rejected
    /// before the next poll or settle.
    pub async fn poll(&self) -> Result<SourceBatch<'_>, CallError> {
        self.reject_orphans(u64::MAX).await?;
        let poll = self.vtable.poll;
        // The raw pointer is taken inside the closure so that it never lives across an
        // await: the future stays Send.
        let view = call_poll(self.orphan.clone(), |done, ctx| {
            // SAFETY: the instance is open while the handle is alive.
            unsafe { poll(self.instance.ptr(), done, ctx) }
        })
        .await?;
        let schema = Schema::from_code(view.schema).ok_or_else(|| {
            CallError::new(
                CallErrorKind::InvalidCall,
                format!("the source produced unknown schema code {}", view.schema),
            )
        });
        Ok(SourceBatch {
            source: self,
            view,
            schema,
            settled: false,
        })
    }

    /// Rejects, oldest first, the batches dropped unsettled that came before `before`.
    async fn reject_orphans(&self, before: u64) -> Result<(), CallError> {
        loop {
            let orphan = self
                .orphan
                .lock()
                .map_or(None, |mut orphans| match orphans.first() {
                    Some(&oldest) if oldest < before => Some(orphans.remove(0)),
                    _ => None,
                });
            match orphan {
                Some(batch_id) => self.settle_now(batch_id, false).await?,
                None => return Ok(()),
            }
        }
    }

    async fn settle(&self, batch_id: u64, accepted: bool) -> Result<(), CallError> {
        self.reject_orphans(batch_id).await?;
        self.settle_now(batch_id, accepted).await
    }

    async fn settle_now(&self, batch_id: u64, accepted: bool) -> Result<(), CallError> {
        self.payloads_back(batch_id).await;
        self.start_settle(batch_id, accepted).await
    }

    /// Waits until no payload lent out of `batch_id` is alive: the plugin frees the
    /// batch once it is settled.
    async fn payloads_back(&self, batch_id: u64) {
        if self.loans.out_on(batch_id) {
            // Only a caller that keeps payloads past the settle gets here; say so, as
            // the source makes no progress until they are dropped.
            tracing::warn!(
                connector = %self.key(),
                batch = batch_id,
                "settling waits for the batch's payloads, still in use"
            );
        }
        self.loans.all_back(batch_id).await;
    }

    /// Hands the plugin a batch's outcome; the answer comes later.
    fn start_settle(&self, batch_id: u64, accepted: bool) -> Answer<()> {
        let batch_result = self.vtable.batch_result;
        call_done((), |done, ctx| {
            // SAFETY: the instance is open while the handle is alive.
            unsafe { batch_result(self.instance.ptr(), batch_id, u8::from(accepted), done, ctx) }
        })
    }

    /// Settles several batches, in the order given (which must be the order they were
    /// polled), `true` accepting and `false` rejecting each. Every outcome is handed
    /// to the plugin before any answer is awaited, so the plugin serves them all in
    /// one wake-up instead of one round trip each. Like every settle, each waits until
    /// the batch's [`SourceBatch::payloads`] are all dropped. Returns each batch's
    /// answer, in the same order; a batch whose settle could not be handed over gets
    /// the error.
    pub async fn settle_all(
        &self,
        batches: Vec<(SourceBatch<'_>, bool)>,
    ) -> Vec<Result<(), CallError>> {
        let mut answers = Vec::with_capacity(batches.len());
        for (mut batch, accepted) in batches {
            batch.settled = true;
            let id = batch.view.batch_id;
            answers.push(match self.reject_orphans(id).await {
                Ok(()) => {
                    self.payloads_back(id).await;
                    Ok(self.start_settle(id, accepted))
                }
                Err(error) => Err(error),
            });
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(match answer {
                Ok(answer) => answer.await,
                Err(error) => Err(error),
            });
        }
        outcomes
    }

    /// Closes the source: abandons a `poll` that is waiting, waits up to `timeout` for
    /// other calls in flight and the connector's `close`.
    ///
    /// Drop every [`SourceBatch::payloads`] first: while one lives, closing would free
    /// memory it reads, so the instance is left open (leaked) and this returns an error.
    pub async fn close(mut self, timeout: Duration) -> Result<(), CallError> {
        if self.loans.any_out() {
            self.instance.abandon();
            return Err(CallError::new(
                CallErrorKind::InvalidCall,
                "payloads of the source's batches are still in use; the instance is left open",
            ));
        }
        self.instance.take().close(timeout).await
    }
}

impl Drop for SourceInstance {
    fn drop(&mut self) {
        if self.loans.any_out() {
            tracing::warn!(
                connector = %self.key(),
                "source dropped while its payloads are in use; the instance is left open"
            );
            self.instance.abandon();
        }
    }
}

/// A batch a source produced, borrowed from the plugin until it is settled.
#[derive(Debug)]
pub struct SourceBatch<'a> {
    source: &'a SourceInstance,
    view: SourceBatchView,
    schema: Result<Schema, CallError>,
    settled: bool,
}

impl SourceBatch<'_> {
    /// The batch id, unique per instance.
    pub fn id(&self) -> u64 {
        self.view.batch_id
    }

    /// The schema of the payloads, or the error if the plugin sent an unknown code.
    pub fn schema(&self) -> Result<Schema, CallError> {
        self.schema.clone()
    }

    /// The messages, borrowed from the plugin without copying.
    pub fn messages(&self) -> &[Message<'_>] {
        // SAFETY: the ABI keeps the batch's views valid and unchanged until it is
        // settled, and settling consumes `self`, ending this borrow first.
        unsafe { Message::slice_from_raw(self.view.messages, self.view.messages_len) }
    }

    /// Each message's payload as `Bytes` that may outlive this handle, in message order.
    ///
    /// Payloads the plugin wrote back to back (as the SDK does for a batch built in
    /// one buffer) are lent without a copy; scattered ones are copied into one buffer,
    /// which costs less than lending each. Settling the batch (or closing the source)
    /// waits until every lent `Bytes`, and every clone of one, is dropped: drop them
    /// before settling, or the settle never ends.
    pub fn payloads(&self) -> Vec<Bytes> {
        let messages = self.messages();
        // Runs of messages whose payloads lie back to back in memory, as index ranges
        // (an empty payload stands alone).
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (index, payload) in messages.iter().map(Message::payload).enumerate() {
            let follows = runs.last().is_some_and(|run| {
                let previous = messages[run.end - 1].payload();
                !previous.is_empty()
                    && !payload.is_empty()
                    && previous.as_ptr_range().end == payload.as_ptr()
            });
            match runs.last_mut() {
                Some(run) if follows => run.end = index + 1,
                _ => runs.push(index..index + 1),
            }
        }
        // A lent run costs an allocation and a lock; below ~8 payloads a run the copy
        // is cheaper.
        if runs.len() * 8 > messages.len() {
            let total = messages.iter().map(|message| message.payload().len()).sum();
            let mut buffer = BytesMut::with_capacity(total);
            for message in messages {
                buffer.extend_from_slice(message.payload());
            }
            let mut copied = buffer.freeze();
            return messages
                .iter()
                .map(|message| copied.split_to(message.payload().len()))
                .collect();
        }
        let mut payloads = Vec::with_capacity(messages.len());
        for run in runs {
            let run = &messages[run];
            let start = run[0].payload();
            if start.is_empty() {
                payloads.push(Bytes::new());
                continue;
            }
            let len = run.iter().map(|message| message.payload().len()).sum();
            // SAFETY: the run's payloads lie back to back in memory the plugin owns,
            // which the ABI keeps valid and unchanged until the batch is settled or the
            // instance closed; both wait for the loan (`SourceInstance::payloads_back`,
            // `close`, and `Drop`, which leaks the instance instead). The host only
            // reads the run. For the SDK's batches split from one buffer the run is one
            // allocation; payloads of separate allocations that happen to touch are
            // read as one range of the plugin's memory, every byte of which is one of
            // the payloads. (One loan per payload instead cost a `Bytes` owner
            // allocation per message: 10% more CPU per message at 135 B in the e2e
            // bench.)
            let loan =
                unsafe { Loan::new(start.as_ptr(), len, self.view.batch_id, &self.source.loans) };
            let mut lent = Bytes::from_owner(loan);
            for message in run {
                payloads.push(lent.split_to(message.payload().len()));
            }
        }
        payloads
    }

    /// The state to persist once the batch is accepted; `None` leaves it unchanged.
    pub fn state(&self) -> Option<&[u8]> {
        if self.view.state.is_null() {
            return None;
        }
        // SAFETY: as for `messages`.
        Some(unsafe { self.view.state.as_bytes() })
    }

    /// Tells the source that Iggy stored the batch (and its state was persisted), so it
    /// may commit its cursor.
    pub async fn accept(mut self) -> Result<(), CallError> {
        self.settled = true;
        self.source.settle(self.view.batch_id, true).await
    }

    /// Tells the source the batch was not stored, so it rewinds its cursor.
    pub async fn reject(mut self) -> Result<(), CallError> {
        self.settled = true;
        self.source.settle(self.view.batch_id, false).await
    }
}

impl Drop for SourceBatch<'_> {
    fn drop(&mut self) {
        if !self.settled
            && let Ok(mut orphans) = self.source.orphan.lock()
        {
            let at = orphans.partition_point(|&id| id < self.view.batch_id);
            orphans.insert(at, self.view.batch_id);
        }
    }
}
