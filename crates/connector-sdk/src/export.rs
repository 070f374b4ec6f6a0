//! The plugin side of the ABI: what [`export_sink!`](crate::export_sink) and
//! [`export_source!`](crate::export_source) expand to call.
//!
//! Each instance owns a tokio runtime (its executor) whose threads are tagged with the
//! connector key. Every ABI call spawns the work on that executor and returns at once;
//! the work reports back through the host's completion function. Panics are caught at
//! the entry point and around every connector future, and come back as
//! [`STATUS_PANIC`](crate::abi::STATUS_PANIC) with the panic message; an instance that
//! panicked refuses further calls except `close`.
//!
//! The file is long on purpose: every `unsafe` entry point, the completion plumbing it
//! relies on and the instance whose lifetime it manages are read together, so that no
//! `// SAFETY:` argument depends on code in another file.

use std::any::Any;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::Instrument;

use crate::abi::{
    self, ConnectorDescriptor, DoneFn, HeaderView, MessageView, OpenArgs, OpenDoneFn, PollDoneFn,
    RawSlice, SinkBatchView, SinkVTable, SourceBatchView, SourceVTable,
};
use crate::{
    BatchOutcome, ConnectorContext, Error, Message, MessageBatch, ProducedBatch, Schema, Sink,
    Source, log_forward, parse_config,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A host completion function with its context, called exactly once: explicitly, or
/// with [`abi::STATUS_CANCELLED`] when dropped unfinished (the work was abandoned).
struct Completion<F: CompletionFn> {
    func: Option<F>,
    ctx: *mut c_void,
}

// SAFETY: the context pointer is opaque to the plugin; the ABI says the host's
// completion may be called from any thread with it.
unsafe impl<F: CompletionFn> Send for Completion<F> {}

/// The three completion shapes of the ABI.
trait CompletionFn: Copy + Send + 'static {
    /// What a successful completion carries besides the status.
    type Payload;
    fn call(self, ctx: *mut c_void, status: i32, message: &str, payload: Self::Payload);
    fn empty() -> Self::Payload;
}

impl CompletionFn for DoneFn {
    type Payload = ();
    fn call(self, ctx: *mut c_void, status: i32, message: &str, _: ()) {
        // SAFETY: the host passed this function and context for this call's completion;
        // the message lives until the call returns.
        unsafe { self(ctx, status, RawSlice::new(message.as_bytes())) }
    }
    fn empty() {}
}

impl CompletionFn for OpenDoneFn {
    type Payload = *mut c_void;
    fn call(self, ctx: *mut c_void, status: i32, message: &str, instance: *mut c_void) {
        // SAFETY: as for DoneFn.
        unsafe { self(ctx, status, RawSlice::new(message.as_bytes()), instance) }
    }
    fn empty() -> *mut c_void {
        std::ptr::null_mut()
    }
}

impl CompletionFn for PollDoneFn {
    type Payload = *const SourceBatchView;
    fn call(self, ctx: *mut c_void, status: i32, message: &str, batch: *const SourceBatchView) {
        // SAFETY: as for DoneFn; the batch view stays valid until `batch_result`.
        unsafe { self(ctx, status, RawSlice::new(message.as_bytes()), batch) }
    }
    fn empty() -> *const SourceBatchView {
        std::ptr::null()
    }
}

impl<F: CompletionFn> Completion<F> {
    fn new(func: F, ctx: *mut c_void) -> Self {
        Completion {
            func: Some(func),
            ctx,
        }
    }

    fn ok(mut self, payload: F::Payload) {
        if let Some(func) = self.func.take() {
            func.call(self.ctx, abi::STATUS_OK, "", payload);
        }
    }

    fn fail(mut self, status: i32, message: &str) {
        if let Some(func) = self.func.take() {
            func.call(self.ctx, status, message, F::empty());
        }
    }

    fn error(self, error: &Error) {
        self.fail(error.status(), error.message());
    }
}

impl<F: CompletionFn> Drop for Completion<F> {
    fn drop(&mut self) {
        if let Some(func) = self.func.take() {
            func.call(
                self.ctx,
                abi::STATUS_CANCELLED,
                "the call was abandoned because the connector instance is closing",
                F::empty(),
            );
        }
    }
}

/// Runs the synchronous part of an entry point, turning a panic into a completion.
fn guard_entry<F: CompletionFn>(
    completion: Completion<F>,
    body: impl FnOnce(&mut Option<Completion<F>>),
) {
    let mut slot = Some(completion);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| body(&mut slot)));
    if let Err(payload) = outcome
        && let Some(completion) = slot.take()
    {
        completion.fail(abi::STATUS_PANIC, &panic_message(payload.as_ref()));
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// A future that turns a panic while polling its inner future into `Err(message)`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Why a call failed: an ABI status and a message.
type Failure = (i32, String);

/// Runs one connector call with panics caught. A panic poisons the instance: the
/// connector may be half-way through whatever panicked, so it is not called again.
async fn guarded<R>(
    poisoned: &mut Option<String>,
    call: impl Future<Output = Result<R, Error>>,
) -> Result<R, Failure> {
    if let Some(panic) = poisoned {
        return Err((
            abi::STATUS_PANIC,
            format!("the instance is unusable after an earlier panic ({panic}); reopen it"),
        ));
    }
    match CatchUnwind(Box::pin(call)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((error.status(), error.message().to_owned())),
        Err(panic) => {
            *poisoned = Some(panic.clone());
            Err((abi::STATUS_PANIC, panic))
        }
    }
}

/// A batch a source produced, kept until the host settles it. The views point into
/// `batch`, `headers` and `messages`, whose heap buffers never move while it lives.
struct PendingBatch {
    view: SourceBatchView,
    _messages: Vec<MessageView>,
    _headers: Vec<HeaderView>,
    _batch: ProducedBatch,
}

impl PendingBatch {
    fn new(batch_id: u64, batch: ProducedBatch) -> Box<Self> {
        let headers: Vec<HeaderView> = batch
            .messages
            .iter()
            .flat_map(|message| message.headers.iter().map(|header| header.view()))
            .collect();
        let mut first_header = 0;
        let messages: Vec<MessageView> = batch
            .messages
            .iter()
            .map(|message| {
                let count = message.headers.len();
                let view = message.view(&headers[first_header..first_header + count]);
                first_header += count;
                view
            })
            .collect();
        let view = SourceBatchView {
            batch_id,
            schema: batch.schema.code(),
            messages: messages.as_ptr(),
            messages_len: messages.len(),
            state: match &batch.state {
                Some(state) => RawSlice {
                    // A non-null pointer marks "state present", even when it is empty.
                    ptr: if state.is_empty() {
                        std::ptr::NonNull::<u8>::dangling().as_ptr()
                    } else {
                        state.as_ptr()
                    },
                    len: state.len(),
                },
                None => RawSlice::EMPTY,
            },
        };
        Box::new(PendingBatch {
            view,
            _messages: messages,
            _headers: headers,
            _batch: batch,
        })
    }
}

/// Work for an instance's driver task. The ABI entry points only queue jobs, so the
/// connector sees calls in exactly the order the host made them.
enum Job {
    Consume {
        batch: MessageBatch<'static>,
        completion: Completion<DoneFn>,
    },
    Poll {
        completion: Completion<PollDoneFn>,
    },
    Settle {
        batch_id: u64,
        outcome: BatchOutcome,
        completion: Completion<DoneFn>,
    },
    Close {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
}

/// One open connector instance; the host holds it as an opaque pointer.
pub struct Instance {
    jobs: mpsc::UnboundedSender<Job>,
    /// Wakes a source driver out of an idle `poll` when the instance closes.
    closing: Arc<Notify>,
    runtime: Runtime,
}

impl Instance {
    /// Queues a job; if the driver is gone, dropping the job reports cancellation.
    fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

/// Runs a sink's jobs one after the other until it is closed.
async fn drive_sink<T: Sink>(mut sink: T, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut poisoned = None;
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Consume { batch, completion } => {
                // `completion` was bound before the call future below, so if this task is
                // dropped mid-call, the future (which reads the batch) is dropped first
                // and only then does the completion let the host free the batch.
                match guarded(&mut poisoned, sink.consume(batch)).await {
                    Ok(()) => completion.ok(()),
                    Err((status, message)) => completion.fail(status, &message),
                }
            }
            Job::Close { reply } => {
                let _ = reply.send(close_connector(&mut poisoned, sink, sink_close_fn::<T>).await);
                return;
            }
            Job::Poll { completion } => {
                completion.fail(abi::STATUS_INVALID_CALL, "poll called on a sink");
            }
            Job::Settle { completion, .. } => {
                completion.fail(abi::STATUS_INVALID_CALL, "batch_result called on a sink");
            }
        }
    }
}

/// Runs a source's jobs one after the other until it is closed, except that a settle
/// arriving while a `poll` waits abandons that poll (polls are cancel-safe), is served,
/// and the poll starts again: a source waiting for data never holds up the commit of
/// the batches it already produced.
async fn drive_source<T: Source>(
    source: T,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    closing: Arc<Notify>,
) {
    let mut driver = SourceDriver {
        source,
        poisoned: None,
        limit: T::MAX_UNSETTLED_BATCHES.max(1) as usize,
        pending: VecDeque::new(),
        next_batch_id: 1,
    };
    // Jobs that arrived while a poll waited and that must wait for its answer.
    let mut backlog: VecDeque<Job> = VecDeque::new();
    loop {
        let job = match backlog.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Poll { completion } => {
                if let Err(message) = driver.may_poll() {
                    completion.fail(abi::STATUS_INVALID_CALL, &message);
                    continue;
                }
                loop {
                    let polled = {
                        // `poll` is cancel-safe by contract: closing abandons one that
                        // waits, and so does a settle (the poll then starts again).
                        let polled = unless_notified(
                            &closing,
                            guarded(&mut driver.poisoned, driver.source.poll()),
                        );
                        tokio::select! {
                            biased;
                            polled = polled => Ok(polled),
                            job = jobs.recv() => Err(job),
                        }
                    };
                    match polled {
                        Ok(None) => {
                            completion.fail(abi::STATUS_CANCELLED, "the instance is closing");
                            break;
                        }
                        Ok(Some(Ok(batch))) => {
                            let batch = PendingBatch::new(driver.next_batch_id, batch);
                            driver.next_batch_id += 1;
                            let view: *const SourceBatchView = &batch.view;
                            driver.pending.push_back((batch, false));
                            completion.ok(view);
                            break;
                        }
                        Ok(Some(Err((status, message)))) => {
                            completion.fail(status, &message);
                            break;
                        }
                        Err(Some(Job::Settle {
                            batch_id,
                            outcome,
                            completion: settled,
                        })) => driver.settle(batch_id, outcome, settled).await,
                        Err(Some(other)) => backlog.push_back(other),
                        // The host is gone: nothing will read the answer.
                        Err(None) => return,
                    }
                }
            }
            Job::Settle {
                batch_id,
                outcome,
                completion,
            } => driver.settle(batch_id, outcome, completion).await,
            Job::Close { reply } => {
                let SourceDriver {
                    source,
                    mut poisoned,
                    pending,
                    ..
                } = driver;
                drop(pending);
                let _ =
                    reply.send(close_connector(&mut poisoned, source, source_close_fn::<T>).await);
                return;
            }
            Job::Consume { completion, .. } => {
                completion.fail(abi::STATUS_INVALID_CALL, "consume called on a source");
            }
        }
    }
}

/// A source instance with its unsettled batches.
struct SourceDriver<T> {
    source: T,
    poisoned: Option<String>,
    /// `Source::MAX_UNSETTLED_BATCHES`, at least 1.
    limit: usize,
    /// Unsettled batches, oldest first, each with whether a reject before it discarded
    /// it (the source rewound past it, so it may only be rejected).
    pending: VecDeque<(Box<PendingBatch>, bool)>,
    next_batch_id: u64,
}

impl<T: Source> SourceDriver<T> {
    /// Whether the host may poll now; the error says why not.
    fn may_poll(&self) -> Result<(), String> {
        if let Some((oldest, true)) = self.pending.front() {
            return Err(format!(
                "batch {} follows a rejected batch: reject it before polling again",
                oldest.view.batch_id
            ));
        }
        if self.pending.len() >= self.limit {
            return Err(format!(
                "{} batches are unsettled, as many as the source allows: settle batch {} first",
                self.pending.len(),
                self.pending
                    .front()
                    .map_or(0, |(oldest, _)| oldest.view.batch_id)
            ));
        }
        Ok(())
    }

    /// Settles the oldest unsettled batch, which must be `batch_id`.
    async fn settle(
        &mut self,
        batch_id: u64,
        outcome: BatchOutcome,
        completion: Completion<DoneFn>,
    ) {
        let discarded = match self.pending.front() {
            Some((oldest, discarded)) if oldest.view.batch_id == batch_id => *discarded,
            Some((oldest, _)) => {
                let message = format!(
                    "batch {batch_id} is not the oldest unsettled batch {}",
                    oldest.view.batch_id
                );
                return completion.fail(abi::STATUS_INVALID_CALL, &message);
            }
            None => {
                let message = format!("batch {batch_id} is not pending");
                return completion.fail(abi::STATUS_INVALID_CALL, &message);
            }
        };
        self.pending.pop_front();
        if discarded {
            // The source already rewound to an earlier batch.
            return match outcome {
                BatchOutcome::Rejected => completion.ok(()),
                BatchOutcome::Accepted => completion.fail(
                    abi::STATUS_INVALID_CALL,
                    &format!("batch {batch_id} follows a rejected batch and cannot be accepted"),
                ),
            };
        }
        if outcome == BatchOutcome::Rejected {
            for (_, discarded) in &mut self.pending {
                *discarded = true;
            }
        }
        match guarded(&mut self.poisoned, self.source.on_batch_result(outcome)).await {
            Ok(()) => completion.ok(()),
            Err((status, message)) => completion.fail(status, &message),
        }
    }
}

/// Runs `future` unless `notify` fires first (then `None`, and the future is dropped).
async fn unless_notified<F: Future>(notify: &Notify, future: F) -> Option<F::Output> {
    let notified = notify.notified();
    let mut notified = std::pin::pin!(notified);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

fn sink_close_fn<T: Sink>(sink: &mut T) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(sink.close())
}

fn source_close_fn<T: Source>(source: &mut T) -> BoxFuture<'_, Result<(), Error>> {
    Box::pin(source.close())
}

/// Runs the connector's `close`, unless it panicked earlier: then it is only dropped.
async fn close_connector<T>(
    poisoned: &mut Option<String>,
    mut connector: T,
    close: for<'a> fn(&'a mut T) -> BoxFuture<'a, Result<(), Error>>,
) -> Result<(), Failure> {
    if poisoned.is_some() {
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(connector)));
        return Ok(());
    }
    let result = guarded(poisoned, close(&mut connector)).await;
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(connector)));
    result
}

/// Reads the open arguments and builds the instance's executor.
///
/// # Safety
/// `args` must be a valid [`OpenArgs`] per the ABI.
unsafe fn prepare_open(
    plugin: &'static str,
    args: *const OpenArgs,
) -> Result<PreparedOpen, Failure> {
    if args.is_null() {
        return Err((
            abi::STATUS_INVALID_CALL,
            "open arguments are null".to_owned(),
        ));
    }
    // SAFETY: non-null and valid per the caller's contract; copied out at once.
    let args = unsafe { *args };
    if let Some(log) = args.log {
        log_forward::install(log, args.max_log_level, plugin);
    }
    let invalid = |message: String| (abi::STATUS_INVALID_CALL, message);
    // SAFETY: OpenArgs slices are valid for this call (the ABI's memory rules).
    let key = unsafe { args.key.as_str("connector key") }.map_err(invalid)?;
    // SAFETY: as above.
    let config = unsafe { args.config_json.as_str("plugin config") }.map_err(invalid)?;
    let state = (!args.state.is_null()).then(|| {
        // SAFETY: as above.
        unsafe { args.state.as_bytes() }.to_vec()
    });
    let thread_key: Arc<str> = Arc::from(key);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1) as usize)
        .thread_name(format!("{plugin}:{key}"))
        .on_thread_start(move || log_forward::set_thread_connector(thread_key.clone()))
        .enable_all()
        .build()
        .map_err(|error| {
            (
                abi::STATUS_RETRYABLE,
                format!("cannot start the connector's executor: {error}"),
            )
        })?;
    Ok(PreparedOpen {
        config: config.to_owned(),
        context: ConnectorContext {
            key: key.to_owned(),
        },
        state,
        runtime,
    })
}

/// What `open` copies out of its arguments, plus the instance's executor.
struct PreparedOpen {
    config: String,
    context: ConnectorContext,
    state: Option<Vec<u8>>,
    runtime: Runtime,
}

/// Parses the config, runs the connector's `open` on a fresh executor, starts the
/// instance's driver and hands the instance pointer to the host.
///
/// # Safety
/// `args`, `done` and `ctx` must follow the ABI's `open` contract.
unsafe fn open_instance<T, C, O, D>(
    plugin: &'static str,
    args: *const OpenArgs,
    done: OpenDoneFn,
    ctx: *mut c_void,
    open: O,
    drive: D,
) where
    T: Send + 'static,
    C: serde::de::DeserializeOwned + Send + 'static,
    O: FnOnce(C, ConnectorContext, Option<Vec<u8>>) -> BoxFuture<'static, Result<T, Error>>,
    D: FnOnce(T, mpsc::UnboundedReceiver<Job>, Arc<Notify>) -> BoxFuture<'static, ()>
        + Send
        + 'static,
{
    guard_entry(Completion::new(done, ctx), |slot| {
        // SAFETY: forwarded from this function's contract.
        let prepared = unsafe { prepare_open(plugin, args) };
        let PreparedOpen {
            config,
            context,
            state,
            runtime,
        } = match prepared {
            Ok(prepared) => prepared,
            Err((status, message)) => {
                if let Some(completion) = slot.take() {
                    completion.fail(status, &message);
                }
                return;
            }
        };
        let config: C = match parse_config(&config) {
            Ok(config) => config,
            Err(error) => {
                if let Some(completion) = slot.take() {
                    completion.error(&error);
                }
                shutdown_in_background(runtime);
                return;
            }
        };
        let Some(completion) = slot.take() else {
            return;
        };
        let span = tracing::info_span!("connector", connector = %context.key, plugin);
        let opening = open(config, context, state);
        let handle = runtime.handle().clone();
        let driver_span = span.clone();
        // The task owns the executor it runs on until `open` has succeeded, then hands it
        // to the instance. Moving a runtime is fine; only dropping it here would not be.
        handle.spawn(
            async move {
                let completion = completion;
                match CatchUnwind(Box::pin(opening)).await {
                    Ok(Ok(connector)) => {
                        let (jobs, receiver) = mpsc::unbounded_channel();
                        let closing = Arc::new(Notify::new());
                        let driver = drive(connector, receiver, closing.clone());
                        runtime.spawn(driver.instrument(driver_span));
                        let instance = Box::new(Instance {
                            jobs,
                            closing,
                            runtime,
                        });
                        completion.ok(Box::into_raw(instance).cast());
                    }
                    Ok(Err(error)) => {
                        completion.error(&error);
                        shutdown_in_background(runtime);
                    }
                    Err(panic) => {
                        completion.fail(abi::STATUS_PANIC, &panic);
                        shutdown_in_background(runtime);
                    }
                }
            }
            .instrument(span),
        );
    });
}

/// Drops a runtime from a thread of its own: a runtime cannot be dropped from one of its
/// own worker threads or from async code.
fn shutdown_in_background(runtime: Runtime) {
    let spawned = std::thread::Builder::new()
        .name("connector-shutdown".to_owned())
        .spawn(move || runtime.shutdown_timeout(Duration::from_secs(1)));
    if let Err(error) = spawned {
        // Leaking the runtime is the only safe option left; say so.
        tracing::error!(%error, "cannot start a thread to shut a connector executor down");
    }
}

/// Entry point `open` of a sink.
///
/// # Safety
/// The ABI's `open` contract.
pub unsafe fn sink_open<T: Sink>(
    plugin: &'static str,
    args: *const OpenArgs,
    done: OpenDoneFn,
    ctx: *mut c_void,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        open_instance::<T, T::Config, _, _>(
            plugin,
            args,
            done,
            ctx,
            |config, context, _state| Box::pin(T::open(config, context)),
            |sink, jobs, _closing| Box::pin(drive_sink(sink, jobs)),
        )
    }
}

/// Entry point `open` of a source.
///
/// # Safety
/// The ABI's `open` contract.
pub unsafe fn source_open<T: Source>(
    plugin: &'static str,
    args: *const OpenArgs,
    done: OpenDoneFn,
    ctx: *mut c_void,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        open_instance::<T, T::Config, _, _>(
            plugin,
            args,
            done,
            ctx,
            |config, context, state| Box::pin(T::open(config, context, state)),
            |source, jobs, closing| Box::pin(drive_source(source, jobs, closing)),
        )
    }
}

/// Reads a sink batch view into a [`MessageBatch`].
///
/// # Safety
/// `batch` must be a valid view whose memory stays valid for `'a`.
unsafe fn read_sink_batch<'a>(batch: *const SinkBatchView) -> Result<MessageBatch<'a>, String> {
    if batch.is_null() {
        return Err("batch is null".to_owned());
    }
    // SAFETY: non-null and valid per the caller's contract.
    let view = unsafe { *batch };
    // SAFETY: the view's slices are valid for 'a per the caller's contract.
    let stream = unsafe { view.stream.as_str("stream name") }?;
    // SAFETY: as above.
    let topic = unsafe { view.topic.as_str("topic name") }?;
    let schema = Schema::from_code(view.schema)
        .ok_or_else(|| format!("unknown schema code {}", view.schema))?;
    // SAFETY: as above, for the message array.
    let messages = unsafe { Message::slice_from_raw(view.messages, view.messages_len) };
    Ok(MessageBatch {
        stream,
        topic,
        partition_id: view.partition_id,
        schema,
        current_offset: view.current_offset,
        messages,
    })
}

/// The instance behind a host pointer.
///
/// # Safety
/// `instance` must be a live pointer returned by this plugin's `open`.
unsafe fn instance<'a>(instance: *mut c_void) -> &'a Instance {
    // SAFETY: the caller's contract.
    unsafe { &*instance.cast::<Instance>() }
}

/// Entry point `consume` of a sink.
///
/// # Safety
/// The ABI's `consume` contract: `instance` came from this plugin's `open` and is not
/// closed; `batch` stays valid until `done` is called.
pub unsafe extern "C" fn sink_consume(
    instance_ptr: *mut c_void,
    batch: *const SinkBatchView,
    done: DoneFn,
    ctx: *mut c_void,
) {
    guard_entry(Completion::new(done, ctx), |slot| {
        // SAFETY: the batch stays valid until the completion runs, and the completion
        // runs only once the job holding this view is finished with it.
        let batch = match unsafe { read_sink_batch::<'static>(batch) } {
            Ok(batch) => batch,
            Err(message) => {
                if let Some(completion) = slot.take() {
                    completion.fail(abi::STATUS_INVALID_CALL, &message);
                }
                return;
            }
        };
        if let Some(completion) = slot.take() {
            // SAFETY: the caller's contract.
            unsafe { instance(instance_ptr) }.submit(Job::Consume { batch, completion });
        }
    });
}

/// Entry point `poll` of a source.
///
/// # Safety
/// The ABI's `poll` contract: `instance` came from this plugin's `open` and is not closed.
pub unsafe extern "C" fn source_poll(
    instance_ptr: *mut c_void,
    done: PollDoneFn,
    ctx: *mut c_void,
) {
    guard_entry(Completion::new(done, ctx), |slot| {
        if let Some(completion) = slot.take() {
            // SAFETY: the caller's contract.
            unsafe { instance(instance_ptr) }.submit(Job::Poll { completion });
        }
    });
}

/// Entry point `batch_result` of a source.
///
/// # Safety
/// The ABI's `batch_result` contract: `instance` came from this plugin's `open` and is
/// not closed; the host no longer reads the batch's view.
pub unsafe extern "C" fn source_batch_result(
    instance_ptr: *mut c_void,
    batch_id: u64,
    accepted: u8,
    done: DoneFn,
    ctx: *mut c_void,
) {
    guard_entry(Completion::new(done, ctx), |slot| {
        let Some(completion) = slot.take() else {
            return;
        };
        let outcome = match accepted {
            1 => BatchOutcome::Accepted,
            0 => BatchOutcome::Rejected,
            other => {
                let message = format!("batch result code {other} is neither 0 nor 1");
                completion.fail(abi::STATUS_INVALID_CALL, &message);
                return;
            }
        };
        // SAFETY: the caller's contract.
        unsafe { instance(instance_ptr) }.submit(Job::Settle {
            batch_id,
            outcome,
            completion,
        });
    });
}

/// Entry point `close` of a sink or source.
///
/// # Safety
/// The ABI's `close` contract: `instance` came from this plugin's `open`, and the host
/// makes no other call with it, now or later.
pub unsafe extern "C" fn close(
    instance_ptr: *mut c_void,
    timeout_ms: u64,
    done: DoneFn,
    ctx: *mut c_void,
) {
    guard_entry(Completion::new(done, ctx), |slot| {
        if instance_ptr.is_null() {
            if let Some(completion) = slot.take() {
                completion.fail(abi::STATUS_INVALID_CALL, "instance is null");
            }
            return;
        }
        // SAFETY: the pointer came from Box::into_raw in `open_instance`, and the caller
        // guarantees this is its last use.
        let instance = unsafe { Box::from_raw(instance_ptr.cast::<Instance>()) };
        let Some(completion) = slot.take() else {
            return;
        };
        let closer = move || {
            let Instance {
                jobs,
                closing,
                runtime,
            } = *instance;
            closing.notify_one();
            let (reply, answer) = oneshot::channel();
            let _ = jobs.send(Job::Close { reply });
            let deadline = Duration::from_millis(timeout_ms);
            let outcome = runtime.block_on(async {
                match tokio::time::timeout(deadline, answer).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err((
                        abi::STATUS_CANCELLED,
                        "the connector's driver stopped before closing".to_owned(),
                    )),
                    Err(_) => Err((
                        abi::STATUS_RETRYABLE,
                        format!(
                            "the connector did not finish its work and close within \
                             {timeout_ms} ms; it was abandoned"
                        ),
                    )),
                }
            });
            // Remaining tasks are dropped here; their completions report cancellation.
            runtime.shutdown_timeout(Duration::from_millis(100));
            match outcome {
                Ok(()) => completion.ok(()),
                Err((status, message)) => completion.fail(status, &message),
            }
        };
        // `close` returns at once; the blocking part runs on a thread of its own, which
        // is also the only kind of thread allowed to drop a runtime.
        if let Err(error) = std::thread::Builder::new()
            .name("connector-close".to_owned())
            .spawn(closer)
        {
            tracing::error!(%error, "cannot start a thread to close a connector instance");
        }
    });
}

/// Entry point `config_schema`: the JSON Schema of `C`, made on the first call and kept
/// in `cell` (a static of the exporting crate) for the life of the process.
pub fn config_schema<C: schemars::JsonSchema>(cell: &'static OnceLock<String>) -> RawSlice {
    let text = cell.get_or_init(|| {
        // A panic must not cross the boundary; a schema that says nothing ("{}") is
        // still a valid answer, and serialising JSON values cannot fail.
        std::panic::catch_unwind(|| serde_json::to_string(&schemars::schema_for!(C)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| "{}".to_owned())
    });
    RawSlice::new(text.as_bytes())
}

/// Entry point `validate_config`: deserialises the config as `open` would, then asks
/// `check` (the connector's `check_config`).
///
/// # Safety
/// `config_json` must be valid for this call; `done` must be callable with `ctx`.
pub unsafe fn validate_config<C: DeserializeOwned>(
    config_json: RawSlice,
    done: DoneFn,
    ctx: *mut c_void,
    check: fn(&C) -> Vec<String>,
) {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: valid for this call, per this function's contract.
        let text = unsafe { config_json.as_str("plugin config") }?;
        let config = parse_config::<C>(text).map_err(|error| error.to_string())?;
        Ok::<Vec<String>, String>(check(&config))
    }));
    let (status, message) = match outcome {
        Ok(Ok(problems)) if problems.is_empty() => (abi::STATUS_OK, String::new()),
        Ok(Ok(problems)) => (
            abi::STATUS_INVALID_CONFIG,
            serde_json::to_string(&problems).unwrap_or_default(),
        ),
        Ok(Err(problem)) => (
            abi::STATUS_INVALID_CONFIG,
            serde_json::to_string(&[problem]).unwrap_or_default(),
        ),
        Err(payload) => (abi::STATUS_PANIC, panic_message(payload.as_ref())),
    };
    // SAFETY: the host's callback, called once, with a message valid for the call.
    unsafe { done(ctx, status, RawSlice::new(message.as_bytes())) };
}

/// The descriptor of a sink plugin.
pub const fn sink_descriptor(
    name: &'static str,
    version: &'static str,
    vtable: &'static SinkVTable,
    config_schema: abi::ConfigSchemaFn,
    validate_config: abi::ValidateConfigFn,
) -> ConnectorDescriptor {
    ConnectorDescriptor {
        abi_version: abi::ABI_VERSION,
        kind: abi::KIND_SINK,
        name: RawSlice::new(name.as_bytes()),
        version: RawSlice::new(version.as_bytes()),
        sdk_version: RawSlice::new(env!("CARGO_PKG_VERSION").as_bytes()),
        sink: vtable,
        source: std::ptr::null(),
        max_unsettled_batches: 0,
        config_schema,
        validate_config,
    }
}

/// The descriptor of a source plugin that allows `max_unsettled_batches` (at least 1).
pub const fn source_descriptor(
    name: &'static str,
    version: &'static str,
    vtable: &'static SourceVTable,
    max_unsettled_batches: u32,
    config_schema: abi::ConfigSchemaFn,
    validate_config: abi::ValidateConfigFn,
) -> ConnectorDescriptor {
    ConnectorDescriptor {
        abi_version: abi::ABI_VERSION,
        kind: abi::KIND_SOURCE,
        name: RawSlice::new(name.as_bytes()),
        version: RawSlice::new(version.as_bytes()),
        sdk_version: RawSlice::new(env!("CARGO_PKG_VERSION").as_bytes()),
        sink: std::ptr::null(),
        source: vtable,
        max_unsettled_batches: if max_unsettled_batches == 0 {
            1
        } else {
            max_unsettled_batches
        },
        config_schema,
        validate_config,
    }
}

/// Exports a [`Sink`](crate::Sink) implementation as a connector plugin.
///
/// `export_sink!(MySink, "name")` defines, in the calling crate:
/// - `pub fn descriptor() -> &'static ConnectorDescriptor`, to register the connector
///   with a host it is linked into statically;
/// - the C symbol `iggy_connector_descriptor_<crate name>` returning the same
///   descriptor, which the host finds when it loads the crate as a cdylib.
#[macro_export]
macro_rules! export_sink {
    ($sink:ty, $name:expr) => {
        /// This connector's ABI descriptor (the same one its cdylib exports).
        pub fn descriptor() -> &'static $crate::abi::ConnectorDescriptor {
            unsafe extern "C" fn open(
                args: *const $crate::abi::OpenArgs,
                done: $crate::abi::OpenDoneFn,
                ctx: *mut ::std::ffi::c_void,
            ) {
                // SAFETY: the host upholds the ABI contract that sink_open requires.
                unsafe { $crate::__export::sink_open::<$sink>($name, args, done, ctx) }
            }
            static VTABLE: $crate::abi::SinkVTable = $crate::abi::SinkVTable {
                open,
                consume: $crate::__export::sink_consume,
                close: $crate::__export::close,
            };
            $crate::__export_config_entries!(
                <$sink as $crate::Sink>::Config,
                <$sink as $crate::Sink>::check_config
            );
            static DESCRIPTOR: $crate::abi::ConnectorDescriptor = $crate::__export::sink_descriptor(
                $name,
                env!("CARGO_PKG_VERSION"),
                &VTABLE,
                config_schema,
                validate_config,
            );
            &DESCRIPTOR
        }

        $crate::__export_descriptor_symbol!();
    };
}

/// Exports a [`Source`](crate::Source) implementation as a connector plugin.
///
/// Defines `descriptor()` and the exported symbol as [`export_sink!`] does.
#[macro_export]
macro_rules! export_source {
    ($source:ty, $name:expr) => {
        /// This connector's ABI descriptor (the same one its cdylib exports).
        pub fn descriptor() -> &'static $crate::abi::ConnectorDescriptor {
            unsafe extern "C" fn open(
                args: *const $crate::abi::OpenArgs,
                done: $crate::abi::OpenDoneFn,
                ctx: *mut ::std::ffi::c_void,
            ) {
                // SAFETY: the host upholds the ABI contract that source_open requires.
                unsafe { $crate::__export::source_open::<$source>($name, args, done, ctx) }
            }
            static VTABLE: $crate::abi::SourceVTable = $crate::abi::SourceVTable {
                open,
                poll: $crate::__export::source_poll,
                batch_result: $crate::__export::source_batch_result,
                close: $crate::__export::close,
            };
            $crate::__export_config_entries!(
                <$source as $crate::Source>::Config,
                <$source as $crate::Source>::check_config
            );
            static DESCRIPTOR: $crate::abi::ConnectorDescriptor =
                $crate::__export::source_descriptor(
                    $name,
                    env!("CARGO_PKG_VERSION"),
                    &VTABLE,
                    <$source as $crate::Source>::MAX_UNSETTLED_BATCHES,
                    config_schema,
                    validate_config,
                );
            &DESCRIPTOR
        }

        $crate::__export_descriptor_symbol!();
    };
}

/// Defines the `config_schema` and `validate_config` entry points of a connector whose
/// config type is `$config`, checked further by `$check`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_config_entries {
    ($config:ty, $check:expr) => {
        unsafe extern "C" fn config_schema() -> $crate::abi::RawSlice {
            static SCHEMA: ::std::sync::OnceLock<::std::string::String> =
                ::std::sync::OnceLock::new();
            $crate::__export::config_schema::<$config>(&SCHEMA)
        }
        unsafe extern "C" fn validate_config(
            config_json: $crate::abi::RawSlice,
            done: $crate::abi::DoneFn,
            ctx: *mut ::std::ffi::c_void,
        ) {
            // SAFETY: the host upholds the ABI contract that validate_config requires.
            unsafe { $crate::__export::validate_config::<$config>(config_json, done, ctx, $check) }
        }
    };
}

/// The exported C symbol, named after the calling crate so that several connectors can
/// be linked into one binary. Must match [`abi::descriptor_symbol`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_descriptor_symbol {
    () => {
        #[doc(hidden)]
        #[unsafe(export_name = concat!("iggy_connector_descriptor_", env!("CARGO_CRATE_NAME")))]
        pub extern "C" fn __iggy_connector_descriptor() -> *const $crate::abi::ConnectorDescriptor {
            descriptor()
        }
    };
}
