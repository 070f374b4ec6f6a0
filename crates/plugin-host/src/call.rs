//! Turns the ABI's completion callbacks into futures.
//!
//! Each call boxes a context holding a oneshot sender (and whatever must stay alive until
//! the plugin answers), passes it to the plugin as `ctx`, and awaits the receiver. The
//! completion function unboxes the context on whichever thread the plugin calls it from.
//! If the awaiting future was dropped, the answer goes nowhere, but the context (and so
//! the data the plugin was reading) is still freed only when the plugin answers.

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::time::Duration;

use connector_sdk::abi::{CloseFn, DoneFn, OpenDoneFn, PollDoneFn, RawSlice, SourceBatchView};
use tokio::sync::oneshot;

use crate::error::{CallError, CallErrorKind};

/// The outcome of a call from its ABI status and message.
fn outcome(status: i32, message: RawSlice) -> Result<(), CallError> {
    match CallErrorKind::from_status(status) {
        None => Ok(()),
        Some(kind) => {
            // SAFETY: the ABI says the message is valid for the duration of the
            // completion call, which is where this runs.
            let bytes = unsafe { message.as_bytes() };
            Err(CallError::new(kind, String::from_utf8_lossy(bytes)))
        }
    }
}

fn dropped() -> CallError {
    CallError::new(
        CallErrorKind::Cancelled,
        "the plugin dropped the call without answering",
    )
}

struct DoneCall<K> {
    reply: oneshot::Sender<Result<(), CallError>>,
    _keep_alive: K,
}

unsafe extern "C" fn on_done<K>(ctx: *mut c_void, status: i32, message: RawSlice) {
    // SAFETY: `ctx` is the box `call_done::<K>` leaked for this call, and the ABI
    // guarantees the completion runs exactly once.
    let call = unsafe { Box::from_raw(ctx.cast::<DoneCall<K>>()) };
    let _ = call.reply.send(outcome(status, message));
}

/// The answer to a call that has already been made: awaiting it waits for the plugin's
/// completion; dropping it stops waiting but does not cancel the call.
#[derive(Debug)]
#[must_use = "the call runs anyway; await the answer to learn its outcome"]
pub struct Answer<T> {
    receiver: oneshot::Receiver<Result<T, CallError>>,
}

impl<T> Future for Answer<T> {
    type Output = Result<T, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|answer| answer.unwrap_or_else(|_| Err(dropped())))
    }
}

/// Makes a call whose completion is a [`DoneFn`] now; `keep_alive` lives until the
/// plugin answers.
pub(crate) fn call_done<K: Send + 'static>(
    keep_alive: K,
    start: impl FnOnce(DoneFn, *mut c_void),
) -> Answer<()> {
    let (reply, receiver) = oneshot::channel();
    let ctx = Box::into_raw(Box::new(DoneCall {
        reply,
        _keep_alive: keep_alive,
    }));
    start(on_done::<K>, ctx.cast());
    Answer { receiver }
}

/// A completion for calls nobody waits for (closing a dropped handle): logs failures.
unsafe extern "C" fn on_done_detached(ctx: *mut c_void, status: i32, message: RawSlice) {
    // SAFETY: `ctx` is the boxed connector key leaked by `detached_ctx`, used once.
    let key = unsafe { Box::from_raw(ctx.cast::<String>()) };
    if let Err(error) = outcome(status, message) {
        tracing::warn!(connector = %key, %error, "closing a dropped connector instance failed");
    }
}

/// A plugin's instance pointer.
#[derive(Debug)]
pub(crate) struct InstancePtr(NonNull<c_void>);

// SAFETY: the ABI allows calls on an instance from any thread; the plugin serialises
// them internally.
unsafe impl Send for InstancePtr {}
// SAFETY: as for Send.
unsafe impl Sync for InstancePtr {}

struct OpenCall {
    reply: oneshot::Sender<Result<InstancePtr, CallError>>,
}

unsafe extern "C" fn on_open_done(
    ctx: *mut c_void,
    status: i32,
    message: RawSlice,
    instance: *mut c_void,
) {
    // SAFETY: `ctx` is the box `call_open` leaked for this call, used once.
    let call = unsafe { Box::from_raw(ctx.cast::<OpenCall>()) };
    let result = outcome(status, message).and_then(|()| {
        NonNull::new(instance).map(InstancePtr).ok_or_else(|| {
            CallError::new(
                CallErrorKind::InvalidCall,
                "open succeeded without an instance",
            )
        })
    });
    if let Err(Ok(instance)) = call.reply.send(result) {
        // Nobody waits for this instance any more; it cannot be closed from here, so it
        // leaks. Only a host that drops an `open` future mid-way gets here.
        tracing::warn!(instance = ?instance.0, "an opened instance was abandoned by the host");
    }
}

/// Makes an `open` call.
pub(crate) async fn call_open(
    start: impl FnOnce(OpenDoneFn, *mut c_void),
) -> Result<InstancePtr, CallError> {
    let (reply, answer) = oneshot::channel();
    let ctx = Box::into_raw(Box::new(OpenCall { reply }));
    start(on_open_done, ctx.cast());
    answer.await.unwrap_or_else(|_| Err(dropped()))
}

/// The ids, ascending, of batches whose poll answer nobody received or whose handle was
/// dropped unsettled; the next poll or settle rejects them first, oldest first.
pub(crate) type OrphanSlot = Arc<Mutex<Vec<u64>>>;

struct PollCall {
    reply: oneshot::Sender<Result<SourceBatchView, CallError>>,
    orphan: OrphanSlot,
}

unsafe extern "C" fn on_poll_done(
    ctx: *mut c_void,
    status: i32,
    message: RawSlice,
    batch: *const SourceBatchView,
) {
    // SAFETY: `ctx` is the box `call_poll` leaked for this call, used once.
    let call = unsafe { Box::from_raw(ctx.cast::<PollCall>()) };
    let result = outcome(status, message).and_then(|()| {
        if batch.is_null() {
            return Err(CallError::new(
                CallErrorKind::InvalidCall,
                "poll succeeded without a batch",
            ));
        }
        // SAFETY: non-null, and valid until `batch_result` per the ABI.
        Ok(unsafe { *batch })
    });
    if let Err(Ok(view)) = call.reply.send(result)
        && let Ok(mut orphans) = call.orphan.lock()
    {
        let at = orphans.partition_point(|&id| id < view.batch_id);
        orphans.insert(at, view.batch_id);
    }
}

/// Makes a `poll` call.
pub(crate) async fn call_poll(
    orphan: OrphanSlot,
    start: impl FnOnce(PollDoneFn, *mut c_void),
) -> Result<SourceBatchView, CallError> {
    let (reply, answer) = oneshot::channel();
    let ctx = Box::into_raw(Box::new(PollCall { reply, orphan }));
    start(on_poll_done, ctx.cast());
    answer.await.unwrap_or_else(|_| Err(dropped()))
}

/// How long an instance dropped without `close` gets to finish its work.
const DROP_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An open plugin instance: its pointer and the plugin's `close`. Closing consumes it,
/// so no call can follow; dropping it closes the instance in the background.
#[derive(Debug)]
pub(crate) struct OpenInstance {
    ptr: Option<InstancePtr>,
    close: CloseFn,
    key: String,
}

impl OpenInstance {
    pub(crate) fn new(ptr: InstancePtr, close: CloseFn, key: &str) -> Self {
        OpenInstance {
            ptr: Some(ptr),
            close,
            key: key.to_owned(),
        }
    }

    /// The instance pointer, to pass to the plugin's functions.
    pub(crate) fn ptr(&self) -> *mut c_void {
        // Only `close` and `drop` take the pointer out, and both end the handle.
        self.ptr
            .as_ref()
            .map_or(std::ptr::null_mut(), |ptr| ptr.0.as_ptr())
    }

    /// The connector key the instance was opened with.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Moves the instance into a new handle, leaving this one closed (for an owner
    /// that implements `Drop` and so cannot move the handle out).
    pub(crate) fn take(&mut self) -> OpenInstance {
        OpenInstance {
            ptr: self.ptr.take(),
            close: self.close,
            key: self.key.clone(),
        }
    }

    /// Gives up the instance without closing it: it stays open, and its memory
    /// allocated, for the life of the process. For when closing could free memory that
    /// is still read.
    pub(crate) fn abandon(&mut self) {
        self.ptr = None;
    }

    /// Closes the instance, waiting up to `timeout` for its work to finish.
    pub(crate) async fn close(mut self, timeout: Duration) -> Result<(), CallError> {
        let Some(ptr) = self.ptr.take() else {
            return Ok(());
        };
        let close = self.close;
        call_done((), |done, ctx| {
            // SAFETY: the pointer is live and, taken out of the handle, never used again.
            unsafe { close(ptr.0.as_ptr(), millis(timeout), done, ctx) }
        })
        .await
    }
}

impl Drop for OpenInstance {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr.take() {
            let ctx = Box::into_raw(Box::new(std::mem::take(&mut self.key)));
            // SAFETY: the pointer is live and, taken out of the handle, never used again;
            // the detached completion frees its own context.
            unsafe {
                (self.close)(
                    ptr.0.as_ptr(),
                    millis(DROP_CLOSE_TIMEOUT),
                    on_done_detached,
                    ctx.cast(),
                )
            }
        }
    }
}
