//! Sink instances and the batches handed to them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::abi::{HeaderView, MessageView, RawSlice, SinkBatchView, SinkVTable};
use connector_sdk::{Message, OwnedHeader, Schema};

use crate::call::{Answer, InstancePtr, OpenInstance, call_done};
use crate::error::CallError;
use crate::plugin::Plugin;

/// Where a batch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSource {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition_id: u32,
    /// Payload schema of the stream.
    pub schema: Schema,
    /// The partition's current offset when the batch was polled.
    pub current_offset: u64,
}

/// A message's metadata, as Iggy delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageMeta {
    /// Message id.
    pub id: u128,
    /// Offset in the partition.
    pub offset: u64,
    /// Iggy timestamp, microseconds since the UNIX epoch.
    pub timestamp: u64,
    /// Producer timestamp, microseconds since the UNIX epoch.
    pub origin_timestamp: u64,
    /// Iggy's checksum.
    pub checksum: u64,
}

/// Collects messages into a [`SinkBatch`], writing each message's ABI view as it goes.
/// Payloads are moved in, never copied.
#[derive(Debug)]
pub struct SinkBatchBuilder {
    source: BatchSource,
    views: Vec<MessageView>,
    payloads: Vec<Bytes>,
    headers: Vec<OwnedHeader>,
}

impl SinkBatchBuilder {
    /// A builder with room for `capacity` messages.
    pub fn with_capacity(source: BatchSource, capacity: usize) -> Self {
        SinkBatchBuilder {
            source,
            views: Vec::with_capacity(capacity),
            payloads: Vec::with_capacity(capacity),
            headers: Vec::new(),
        }
    }

    /// A builder with room for `capacity` messages in the buffers of a batch that is
    /// done with: building in memory that was just used costs fewer cache misses and
    /// no allocation.
    pub fn reusing(source: BatchSource, buffers: SinkBatchBuffers, capacity: usize) -> Self {
        let SinkBatchBuffers {
            mut views,
            mut payloads,
            headers,
        } = buffers;
        views.reserve(capacity);
        payloads.reserve(capacity);
        SinkBatchBuilder {
            source,
            views,
            payloads,
            headers,
        }
    }

    /// Appends a message.
    #[inline]
    pub fn push(&mut self, meta: MessageMeta, headers: Vec<OwnedHeader>, payload: Bytes) {
        self.views.push(MessageView {
            id_low: meta.id as u64,
            id_high: (meta.id >> 64) as u64,
            offset: meta.offset,
            timestamp: meta.timestamp,
            origin_timestamp: meta.origin_timestamp,
            checksum: meta.checksum,
            // A `Bytes` points at heap or static data that does not move with it.
            payload: RawSlice::new(&payload),
            // Pointed at the header views in `build`, once they stop moving.
            headers: std::ptr::null(),
            headers_len: headers.len(),
        });
        self.payloads.push(payload);
        if !headers.is_empty() {
            self.headers.extend(headers);
        }
    }

    /// Number of messages so far.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no message was pushed.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Finishes the batch.
    pub fn build(self) -> SinkBatch {
        let SinkBatchBuilder {
            source,
            mut views,
            payloads,
            headers,
        } = self;
        let header_views: Vec<HeaderView> = headers
            .iter()
            .map(|header| HeaderView {
                key: RawSlice::new(header.key.as_bytes()),
                kind: header.kind as u32,
                value: RawSlice::new(&header.value),
            })
            .collect();
        if !header_views.is_empty() {
            let mut next = 0;
            for view in views.iter_mut().filter(|view| view.headers_len > 0) {
                view.headers = header_views[next..].as_ptr();
                next += view.headers_len;
            }
        }
        let view = SinkBatchView {
            stream: RawSlice::new(source.stream.as_bytes()),
            topic: RawSlice::new(source.topic.as_bytes()),
            partition_id: source.partition_id,
            schema: source.schema.code(),
            current_offset: source.current_offset,
            messages: views.as_ptr(),
            messages_len: views.len(),
        };
        SinkBatch {
            view,
            views,
            _payloads: payloads,
            _headers: headers,
            _header_views: header_views,
            source,
        }
    }
}

/// The empty buffers of a batch that is done with (see [`SinkBatch::into_buffers`]).
#[derive(Debug, Default)]
pub struct SinkBatchBuffers {
    views: Vec<MessageView>,
    payloads: Vec<Bytes>,
    headers: Vec<OwnedHeader>,
}

/// An immutable batch of messages for a sink: the ABI view and the data it points into.
///
/// The view points into the batch's own heap buffers, which never move or change while
/// the batch lives; a `consume` call keeps the batch alive (through its `Arc`) until the
/// plugin answers, even if the caller stops waiting.
pub struct SinkBatch {
    view: SinkBatchView,
    views: Vec<MessageView>,
    _payloads: Vec<Bytes>,
    _headers: Vec<OwnedHeader>,
    _header_views: Vec<HeaderView>,
    source: BatchSource,
}

impl SinkBatch {
    /// The messages, as the sink sees them.
    pub fn messages(&self) -> &[Message<'_>] {
        // SAFETY: the views point into this batch's own buffers, which live and stay
        // unchanged as long as `self` is borrowed.
        unsafe { Message::slice_from_raw(self.views.as_ptr(), self.views.len()) }
    }

    /// Where the messages come from.
    pub fn source(&self) -> &BatchSource {
        &self.source
    }

    /// The batch's buffers, emptied (its payloads are dropped now), for
    /// [`SinkBatchBuilder::reusing`].
    pub fn into_buffers(self) -> SinkBatchBuffers {
        let SinkBatch {
            mut views,
            _payloads: mut payloads,
            _headers: mut headers,
            ..
        } = self;
        views.clear();
        payloads.clear();
        headers.clear();
        SinkBatchBuffers {
            views,
            payloads,
            headers,
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether the batch has no messages.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

impl std::fmt::Debug for SinkBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkBatch")
            .field("source", &self.source)
            .field("messages", &self.views.len())
            .finish()
    }
}

/// An open sink. Closing it consumes the handle, so no call can follow the close;
/// dropping it unclosed closes it in the background.
#[derive(Debug)]
pub struct SinkInstance {
    plugin: Plugin,
    vtable: &'static SinkVTable,
    instance: OpenInstance,
}

impl SinkInstance {
    pub(crate) fn new(
        plugin: Plugin,
        vtable: &'static SinkVTable,
        instance: InstancePtr,
        key: &str,
    ) -> Self {
        SinkInstance {
            plugin,
            vtable,
            instance: OpenInstance::new(instance, vtable.close, key),
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

    /// Hands a batch to the sink now and returns the future of its answer. The calling
    /// thread is never blocked: the sink runs on its own executor.
    ///
    /// Calls on one instance are served in the order they are made, so a caller can keep
    /// several batches in flight and still see their answers in order.
    pub fn consume(&self, batch: &Arc<SinkBatch>) -> Answer<()> {
        let consume = self.vtable.consume;
        let instance = self.instance.ptr();
        let view: *const SinkBatchView = &batch.view;
        call_done(batch.clone(), |done, ctx| {
            // SAFETY: the instance is open (the handle is alive), and the batch the view
            // points into is kept alive by the call context until the plugin answers.
            unsafe { consume(instance, view, done, ctx) }
        })
    }

    /// Closes the sink: waits up to `timeout` for the calls in flight and the
    /// connector's `close`.
    pub async fn close(self, timeout: Duration) -> Result<(), CallError> {
        self.instance.close(timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(partition_id: u32) -> BatchSource {
        BatchSource {
            stream: "s".to_owned(),
            topic: "t".to_owned(),
            partition_id,
            schema: Schema::Json,
            current_offset: 9,
        }
    }

    fn meta(offset: u64) -> MessageMeta {
        MessageMeta {
            offset,
            ..MessageMeta::default()
        }
    }

    #[test]
    fn a_batch_built_in_reused_buffers_holds_only_its_own_messages() {
        let mut builder = SinkBatchBuilder::with_capacity(source(0), 2);
        builder.push(
            meta(0),
            vec![OwnedHeader::string("old", "header")],
            Bytes::from_static(b"first"),
        );
        builder.push(meta(1), Vec::new(), Bytes::from_static(b"second"));
        let buffers = builder.build().into_buffers();

        let mut builder = SinkBatchBuilder::reusing(source(1), buffers, 3);
        builder.push(meta(5), Vec::new(), Bytes::from_static(b"third"));
        builder.push(
            meta(6),
            vec![OwnedHeader::string("new", "value")],
            Bytes::from_static(b"fourth"),
        );
        let batch = builder.build();
        assert_eq!(batch.source().partition_id, 1);
        let messages = batch.messages();
        let seen: Vec<(u64, &[u8])> = messages
            .iter()
            .map(|message| (message.offset(), message.payload()))
            .collect();
        assert_eq!(seen, [(5, &b"third"[..]), (6, &b"fourth"[..])]);
        assert_eq!(messages[0].headers().len(), 0);
        let headers: Vec<(&str, &[u8])> = messages[1]
            .headers()
            .map(|header| (header.key, header.value))
            .collect();
        assert_eq!(headers, [("new", &b"value"[..])]);
    }
}
