//! Source instances and the batches they produce.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_sdk::abi::{SourceBatchView, SourceVTable};
use connector_sdk::{Message, Schema};

use crate::call::{Answer, InstancePtr, OpenInstance, OrphanSlot, call_done, call_poll};
use crate::error::{CallError, CallErrorKind};
use crate::plugin::Plugin;

/// An open source. Closing it consumes the handle, so no call can follow the close;
/// dropping it unclosed closes it in the background.
#[derive(Debug)]
pub struct SourceInstance {
    plugin: Plugin,
    vtable: &'static SourceVTable,
    instance: OpenInstance,
    orphan: OrphanSlot,
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
        self.start_settle(batch_id, accepted).await
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
    /// one wake-up instead of one round trip each. Returns each batch's answer, in the
    /// same order; a batch whose settle could not be handed over gets the error.
    pub async fn settle_all(
        &self,
        batches: Vec<(SourceBatch<'_>, bool)>,
    ) -> Vec<Result<(), CallError>> {
        let mut answers = Vec::with_capacity(batches.len());
        for (mut batch, accepted) in batches {
            batch.settled = true;
            let id = batch.view.batch_id;
            answers.push(match self.reject_orphans(id).await {
                Ok(()) => Ok(self.start_settle(id, accepted)),
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
    pub async fn close(self, timeout: Duration) -> Result<(), CallError> {
        self.instance.close(timeout).await
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
