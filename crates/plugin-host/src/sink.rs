//! Sink instances and the batches handed to them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connector_sdk::abi::{HeaderView, MessageView, RawSlice, SinkBatchView, SinkVTable};
use connector_sdk::{OwnedHeader, Schema};

use crate::call::{InstancePtr, call_done, detached_ctx, on_done_detached};
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

/// One message to hand to a sink. The payload is shared, never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMessage {
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
    /// User headers.
    pub headers: Vec<OwnedHeader>,
    /// Payload.
    pub payload: Bytes,
}

/// An immutable batch of messages for a sink, with its ABI view built once.
///
/// The view points into the batch's own heap buffers, which never move or change while
/// the batch lives; a `consume` call keeps the batch alive (through its `Arc`) until the
/// plugin answers, even if the caller stops waiting.
pub struct SinkBatch {
    view: SinkBatchView,
    _message_views: Vec<MessageView>,
    _header_views: Vec<HeaderView>,
    messages: Vec<SinkMessage>,
    source: BatchSource,
}

impl SinkBatch {
    /// Builds the batch and its ABI view.
    pub fn new(source: BatchSource, messages: Vec<SinkMessage>) -> Self {
        let header_views: Vec<HeaderView> = messages
            .iter()
            .flat_map(|message| message.headers.iter())
            .map(|header| HeaderView {
                key: RawSlice::new(header.key.as_bytes()),
                kind: header.kind as u32,
                value: RawSlice::new(&header.value),
            })
            .collect();
        let mut next_header = 0;
        let message_views: Vec<MessageView> = messages
            .iter()
            .map(|message| {
                let count = message.headers.len();
                let headers = if count == 0 {
                    std::ptr::null()
                } else {
                    header_views[next_header..].as_ptr()
                };
                next_header += count;
                MessageView {
                    id_low: message.id as u64,
                    id_high: (message.id >> 64) as u64,
                    offset: message.offset,
                    timestamp: message.timestamp,
                    origin_timestamp: message.origin_timestamp,
                    checksum: message.checksum,
                    payload: RawSlice::new(&message.payload),
                    headers,
                    headers_len: count,
                }
            })
            .collect();
        let view = SinkBatchView {
            stream: RawSlice::new(source.stream.as_bytes()),
            topic: RawSlice::new(source.topic.as_bytes()),
            partition_id: source.partition_id,
            schema: source.schema.code(),
            current_offset: source.current_offset,
            messages: message_views.as_ptr(),
            messages_len: message_views.len(),
        };
        SinkBatch {
            view,
            _message_views: message_views,
            _header_views: header_views,
            messages,
            source,
        }
    }

    /// The messages, in the order the sink receives them.
    pub fn messages(&self) -> &[SinkMessage] {
        &self.messages
    }

    /// Where the messages come from.
    pub fn source(&self) -> &BatchSource {
        &self.source
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch has no messages.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl std::fmt::Debug for SinkBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkBatch")
            .field("source", &self.source)
            .field("messages", &self.messages.len())
            .finish()
    }
}

/// An open sink. Closing it consumes the handle, so no call can follow the close;
/// dropping it unclosed closes it in the background.
#[derive(Debug)]
pub struct SinkInstance {
    plugin: Plugin,
    vtable: &'static SinkVTable,
    instance: Option<InstancePtr>,
    key: String,
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
            instance: Some(instance),
            key: key.to_owned(),
        }
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The connector key the instance was opened with.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn ptr(&self) -> *mut std::ffi::c_void {
        // Only `close` and `drop` take the pointer, and both end the handle.
        self.instance
            .as_ref()
            .map_or(std::ptr::null_mut(), |instance| instance.0.as_ptr())
    }

    /// Hands a batch to the sink and waits for its answer. The calling thread is never
    /// blocked: the sink runs on its own executor.
    pub async fn consume(&self, batch: &Arc<SinkBatch>) -> Result<(), CallError> {
        let consume = self.vtable.consume;
        let instance = self.ptr();
        let view: *const SinkBatchView = &batch.view;
        call_done(batch.clone(), |done, ctx| {
            // SAFETY: the instance is open (the handle is alive), and the batch the view
            // points into is kept alive by the call context until the plugin answers.
            unsafe { consume(instance, view, done, ctx) }
        })
        .await
    }

    /// Closes the sink: waits up to `timeout` for an in-flight call, then runs the
    /// connector's `close`.
    pub async fn close(mut self, timeout: Duration) -> Result<(), CallError> {
        let Some(instance) = self.instance.take() else {
            return Ok(());
        };
        let close = self.vtable.close;
        call_done((), |done, ctx| {
            // SAFETY: the pointer is live and, taken out of the handle, never used again.
            unsafe { close(instance.0.as_ptr(), millis(timeout), done, ctx) }
        })
        .await
    }
}

impl Drop for SinkInstance {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            // SAFETY: the pointer is live and, taken out of the handle, never used again;
            // the detached completion frees its own context.
            unsafe {
                (self.vtable.close)(
                    instance.0.as_ptr(),
                    millis(DROP_CLOSE_TIMEOUT),
                    on_done_detached,
                    detached_ctx(&self.key),
                )
            }
        }
    }
}

/// How long an instance dropped without `close` gets to finish its work.
pub(crate) const DROP_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
