//! What the runtime reports about each connector.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_sdk::ConnectorKind;
use transforms::{TransformChain, TransformCounts};

use crate::budget::MemoryBudget;

/// Where a connector is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorState {
    /// Opening its plugin and reaching Iggy.
    Starting,
    /// Moving data.
    Running,
    /// Open, but not polling, on request; resumes where it was.
    Paused,
    /// Stopped on request (or at shutdown).
    Stopped,
    /// Stopped by an error that retries did not overcome; see `last_error`.
    Failed,
    /// Failed, and waiting to be started again.
    Restarting,
    /// Cannot run as configured: its config cannot be read, or its plugin, transforms,
    /// stream schemas or state files cannot be had; see `last_error`. Not restarted:
    /// a new config version (or starting it, once what it needs is fixed) runs it.
    Error,
    /// Running, but a sink with unread messages that has delivered nothing for the
    /// runtime's `stall_timeout` (see `StallPolicy`); it goes back to `running` with
    /// its next delivery.
    Stalled,
    /// A source of a cluster member that runs on another member (or on none yet); it
    /// starts here when the cluster places it here.
    Standby,
}

impl ConnectorState {
    /// Every state, in lifecycle order.
    pub const ALL: [ConnectorState; 9] = [
        ConnectorState::Starting,
        ConnectorState::Running,
        ConnectorState::Paused,
        ConnectorState::Stopped,
        ConnectorState::Failed,
        ConnectorState::Restarting,
        ConnectorState::Stalled,
        ConnectorState::Standby,
        ConnectorState::Error,
    ];

    /// The state's lower-case name, as the API and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorState::Starting => "starting",
            ConnectorState::Running => "running",
            ConnectorState::Paused => "paused",
            ConnectorState::Stopped => "stopped",
            ConnectorState::Failed => "failed",
            ConnectorState::Restarting => "restarting",
            ConnectorState::Stalled => "stalled",
            ConnectorState::Standby => "standby",
            ConnectorState::Error => "error",
        }
    }
}

impl ConnectorState {
    /// The state in upstream's coarser words (its `ConnectorStatus`: `starting`,
    /// `running`, `stopping`, `stopped`, `error`), which its API clients and dashboards
    /// expect in the `status` field: a stalled sink still runs, a paused connector is
    /// stopped until resumed, a standby source is stopped here, and failed, restarting
    /// and error are all `error`.
    pub fn upstream_status(self) -> &'static str {
        match self {
            ConnectorState::Starting => "starting",
            ConnectorState::Running | ConnectorState::Stalled => "running",
            ConnectorState::Paused | ConnectorState::Stopped | ConnectorState::Standby => "stopped",
            ConnectorState::Failed | ConnectorState::Restarting | ConnectorState::Error => "error",
        }
    }
}

impl std::fmt::Display for ConnectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bounds (seconds) of the batch latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of batch latencies: how long one batch took from poll to commit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyHistogram {
    /// Batches per bucket of [`LATENCY_BUCKETS`] (not cumulative); the last entry counts
    /// the batches slower than every bound.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Batches observed.
    pub count: u64,
    /// Sum of their latencies, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Records one batch.
    pub fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        self.buckets[bucket(&LATENCY_BUCKETS, seconds)] += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// A stage of a batch's way through a pipeline, as upstream's runtime names them in
/// the `stage` label of `iggy_connector_stage_duration_seconds`, so that its dashboards
/// find them. Each is timed once per batch, between the boundaries the pipelines
/// already mark (`runner/sink.rs`, `runner/source/`), never per message; where our
/// pipeline does not split work the way upstream's does, the stage takes the nearest
/// boundary, as said on each.
///
/// A stage several batches go through together (a source's send carrying several of
/// its batches, one state write covering them) counts its whole duration for each of
/// them: the histograms say how long a batch waited on the stage, not how busy the
/// stage was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Sink: from the batch read from Iggy to its messages shaped for the plugin:
    /// `transforms::shape` (payload decode, the transform chain and encode, one pass
    /// per message, so decode and transforms cannot be timed apart without a clock per
    /// message; nothing runs when there is nothing to shape) and the error policy for
    /// the messages that failed there.
    ///
    /// Source: the plugin's batch made into messages (ids, headers and the payloads
    /// it lends). Decoding the payloads with the plugin's schema is part of shaping,
    /// so it counts in [`Stage::Prepare`].
    Decode,
    /// Sink: building the batch the plugin gets (its messages' metadata, headers and
    /// payloads laid out for the ABI). The transforms ran in [`Stage::Decode`].
    ///
    /// Source: shaping (decode, transforms, encode for each stream) and making the
    /// sends ready for Iggy: merging batches, cutting them into sends, encoding the
    /// requests (creating a routed topic on first use).
    Prepare,
    /// Sink only: the plugin's `consume` call(s) for the batch, retries included (and,
    /// after a message-level failure, the calls message by message). Not observed for a
    /// batch with nothing left to hand over.
    Ffi,
    /// Source only: the error policy for messages that failed to shape (dead letters
    /// are sends too), then the sends to Iggy that carry the batch.
    IggySend,
    /// Source only: persisting the state that covers the batch: with `verified_resume`
    /// the pending record saved before its sends go, otherwise the state written after
    /// Iggy stored them (one write for the batches ready together). Not observed for a
    /// batch no write covered (a source that keeps no state).
    StateSave,
    /// Both: one batch end to end, the poll excluded: from the batch received (from
    /// the plugin, or read from Iggy) to its delivery (a source's batch accepted by the
    /// plugin after it was stored and its state saved; a sink's batch accepted and its
    /// offset stored). The same span as `batch_latency`, so its count is the batches
    /// delivered.
    Total,
}

impl Stage {
    /// Every stage, in the order of [`StageHistograms`].
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Prepare,
        Stage::Ffi,
        Stage::IggySend,
        Stage::StateSave,
        Stage::Total,
    ];

    /// The stages of a source's batches.
    pub const SOURCE: [Stage; 5] = [
        Stage::Decode,
        Stage::Prepare,
        Stage::IggySend,
        Stage::StateSave,
        Stage::Total,
    ];

    /// The stages of a sink's batches.
    pub const SINK: [Stage; 4] = [Stage::Decode, Stage::Prepare, Stage::Ffi, Stage::Total];

    /// The stages a connector of `kind` times.
    pub fn of(kind: ConnectorKind) -> &'static [Stage] {
        match kind {
            ConnectorKind::Source => &Stage::SOURCE,
            ConnectorKind::Sink => &Stage::SINK,
        }
    }

    /// The stage's name, as upstream's `stage` label spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Prepare => "prepare",
            Stage::Ffi => "ffi",
            Stage::IggySend => "iggy_send",
            Stage::StateSave => "state_save",
            Stage::Total => "total",
        }
    }

    /// Its place in [`Stage::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bounds (seconds) of the stage histograms' buckets: upstream's, so that a
/// dashboard's quantiles read the same buckets.
pub const STAGE_BUCKETS: [f64; 13] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 5.0,
];

/// The first of `bounds` that holds `seconds`, or `bounds.len()` when none does.
fn bucket(bounds: &[f64], seconds: f64) -> usize {
    bounds
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(bounds.len())
}

/// A histogram of how long batches spent in one [`Stage`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageHistogram {
    /// Batches per bucket of [`STAGE_BUCKETS`] (not cumulative); the last entry counts
    /// the batches slower than every bound.
    pub buckets: [u64; STAGE_BUCKETS.len() + 1],
    /// Batches observed.
    pub count: u64,
    /// Sum of their durations, seconds.
    pub sum_seconds: f64,
}

impl StageHistogram {
    /// Records one batch.
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        self.buckets[bucket(&STAGE_BUCKETS, seconds)] += 1;
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// One [`StageHistogram`] per [`Stage`]; those of stages a connector's kind does not
/// have (see [`Stage::of`]) stay empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageHistograms([StageHistogram; Stage::ALL.len()]);

impl StageHistograms {
    /// The histogram of `stage`.
    pub fn get(&self, stage: Stage) -> &StageHistogram {
        &self.0[stage.index()]
    }

    /// Records one delivered batch: each stage it went through, and `total`.
    fn observe(&mut self, stages: &BatchStages, total: Duration) {
        for (histogram, duration) in self.0.iter_mut().zip(stages.0) {
            if let Some(duration) = duration {
                histogram.observe(duration);
            }
        }
        self.0[Stage::Total.index()].observe(total);
    }
}

/// How long one batch spent in each [`Stage`] it went through, as the pipeline
/// measured it at its stage boundaries (`None`: the batch did not go through it).
/// [`Stage::Total`] is the batch's latency, given to [`StatusCell::delivered`] beside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchStages([Option<Duration>; Stage::ALL.len()]);

impl BatchStages {
    /// Sets how long the batch spent in `stage`.
    pub(crate) fn set(&mut self, stage: Stage, duration: Duration) {
        self.0[stage.index()] = Some(duration);
    }

    /// Adds to the batch's time in `stage` (a stage timed in two parts).
    pub(crate) fn add(&mut self, stage: Stage, duration: Duration) {
        let slot = &mut self.0[stage.index()];
        *slot = Some(slot.unwrap_or_default() + duration);
    }
}

/// A connector's counters since the runtime started it the first time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectorMetrics {
    /// Messages received: from the plugin (source) or from Iggy (sink).
    pub messages_in: u64,
    /// Messages delivered: stored by Iggy (source) or accepted by the plugin (sink).
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes delivered.
    pub bytes_out: u64,
    /// Errors seen (each failed attempt, retried or not).
    pub errors: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Messages the error policy passed over (`skip`).
    pub skipped: u64,
    /// Messages a transform filtered out.
    pub filtered: u64,
    /// Messages sent to the dead letter topic.
    pub dead_letters: u64,
    /// Sinks: messages in their topics' partitions beyond their consumer groups'
    /// stored offsets (0 for sources).
    pub lag: u64,
    /// Sinks: times the sink reset its consumer group because a partition's unread
    /// messages had no live reader (see `StallPolicy`).
    pub group_resets: u64,
    /// Messages delivered per second, over the last few seconds.
    pub messages_per_second: f64,
    /// Bytes the connector's pipeline holds now (batches in flight, read ahead,
    /// requests made of them; see `memory_budget`).
    pub memory_bytes: u64,
    /// The most bytes its pipeline held at once since the connector was first known.
    pub memory_peak_bytes: u64,
    /// Its memory budget in bytes (0: none).
    pub memory_budget_bytes: u64,
    /// Batch latencies.
    pub batch_latency: LatencyHistogram,
    /// How long batches spent in each stage of the pipeline, in upstream's stages (its
    /// `iggy_connector_stage_duration_seconds`).
    pub stages: StageHistograms,
}

/// A snapshot of one connector's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorStatus {
    /// Sink or source.
    pub kind: ConnectorKind,
    /// The connector key.
    pub key: String,
    /// The config version it runs.
    pub version: u64,
    /// Its state.
    pub state: ConnectorState,
    /// The error that made it fail (or the last one retried).
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<std::time::SystemTime>,
    /// A number the runtime gives the connector when it first knows it, unique in
    /// this process (upstream's API calls it `id`).
    pub id: u32,
    /// Times the connector was restarted after failing.
    pub restarts: u32,
    /// Times a run of the connector began (opening its plugin instance): one per start,
    /// manual restart, config activation and restart after a failure.
    pub starts: u32,
    /// Seconds in the current state.
    pub seconds_in_state: u64,
    /// Its counters.
    pub metrics: ConnectorMetrics,
    /// Each transform's counters, in order.
    pub transforms: Vec<TransformCounts>,
}

impl ConnectorStatus {
    /// A status with zero counters, as a connector has before it starts.
    pub fn new(kind: ConnectorKind, key: &str, version: u64) -> Self {
        ConnectorStatus {
            kind,
            key: key.to_owned(),
            version,
            state: ConnectorState::Starting,
            last_error: None,
            last_error_at: None,
            id: 0,
            restarts: 0,
            starts: 0,
            seconds_in_state: 0,
            metrics: ConnectorMetrics::default(),
            transforms: Vec::new(),
        }
    }
}

/// Seconds the throughput figure averages over.
const RATE_WINDOW: u64 = 5;

/// Messages delivered per whole second, for the last `RATE_WINDOW + 1` seconds.
#[derive(Debug, Default)]
struct RateWindow {
    /// `(second since start, messages)`, a ring indexed by second.
    slots: [(u64, u64); RATE_WINDOW as usize + 1],
}

impl RateWindow {
    fn add(&mut self, second: u64, messages: u64) {
        let slot = &mut self.slots[(second % (RATE_WINDOW + 1)) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += messages;
    }

    /// The mean over the last `RATE_WINDOW` complete seconds.
    fn rate(&self, now: u64) -> f64 {
        let from = now.saturating_sub(RATE_WINDOW);
        let total: u64 = self
            .slots
            .iter()
            .filter(|(second, _)| *second >= from && *second < now)
            .map(|(_, messages)| messages)
            .sum();
        total as f64 / RATE_WINDOW as f64
    }
}

#[derive(Debug)]
struct Live {
    status: ConnectorStatus,
    since: Instant,
    rate: RateWindow,
    chain: TransformChain,
    /// Each topic's lag (a sink's topics are numbered by `set_lag`'s callers).
    lags: Vec<u64>,
    /// Since when the connector has had lag and delivered nothing.
    stuck_since: Option<Instant>,
}

/// `error` with the secrets it quotes replaced (see [`config_provider::scrub_secrets`]):
/// an error about a config value does not know the value was secret, and the status
/// is what the API shows.
fn scrubbed(error: String) -> String {
    match config_provider::scrub_secrets(&error) {
        std::borrow::Cow::Borrowed(_) => error,
        std::borrow::Cow::Owned(scrubbed) => scrubbed,
    }
}

/// The live status a runner updates and the runtime reads.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell {
    inner: Arc<Mutex<Live>>,
    /// Woken on every change of state, for [`StatusCell::wait_for_state`].
    state_changed: Arc<tokio::sync::Notify>,
    created: Instant,
    /// When a stuck connector is reported [`ConnectorState::Stalled`].
    stall_after: Option<Duration>,
    /// What its pipeline holds in memory, against its budget.
    budget: MemoryBudget,
}

impl StatusCell {
    pub(crate) fn new(kind: ConnectorKind, key: &str, version: u64) -> Self {
        let now = Instant::now();
        StatusCell {
            inner: Arc::new(Mutex::new(Live {
                status: ConnectorStatus::new(kind, key, version),
                since: now,
                rate: RateWindow::default(),
                chain: TransformChain::default(),
                lags: Vec::new(),
                stuck_since: None,
            })),
            state_changed: Arc::new(tokio::sync::Notify::new()),
            created: now,
            stall_after: None,
            budget: MemoryBudget::default(),
        }
    }

    /// What the connector's pipeline holds in memory, against its budget.
    pub(crate) fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Numbers the connector (see [`ConnectorStatus::id`]).
    pub(crate) fn with_id(self, id: u32) -> Self {
        self.update(|status, _| status.id = id);
        self
    }

    /// Reports the connector [`ConnectorState::Stalled`] once it has had lag and
    /// delivered nothing for `after`.
    pub(crate) fn stalled_after(mut self, after: Duration) -> Self {
        self.stall_after = Some(after);
        self
    }

    fn update(&self, change: impl FnOnce(&mut ConnectorStatus, &mut RateWindow)) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let live = &mut *guard;
        let before = live.status.state;
        change(&mut live.status, &mut live.rate);
        if live.status.state != before {
            live.since = Instant::now();
            self.state_changed.notify_waiters();
        }
    }

    /// Waits until the connector's state (as recorded, before any `stalled`) is one
    /// that `done` accepts, at most `within`; returns the state it saw last.
    pub(crate) async fn wait_for_state(
        &self,
        done: impl Fn(ConnectorState) -> bool,
        within: Duration,
    ) -> ConnectorState {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the state is read, so a change in between wakes it.
            let changed = self.state_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let state = self
                .inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .status
                .state;
            if done(state) {
                return state;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return state;
            }
        }
    }

    pub(crate) fn set_state(&self, state: ConnectorState) {
        self.update(|status, _| status.state = state);
    }

    /// Moves to `state` unless the connector failed or cannot run (which outlive a
    /// stop).
    pub(crate) fn settle(&self, state: ConnectorState) {
        self.update(|status, _| {
            if !matches!(status.state, ConnectorState::Failed | ConnectorState::Error) {
                status.state = state;
            }
        });
    }

    /// The connector cannot run as configured ([`ConnectorState::Error`]).
    pub(crate) fn config_error(&self, error: String) {
        self.update(|status, _| {
            status.state = ConnectorState::Error;
            status.metrics.errors += 1;
            status.last_error = Some(scrubbed(error));
            status.last_error_at = Some(std::time::SystemTime::now());
        });
    }

    /// A run of the connector begins.
    pub(crate) fn starting(&self) {
        self.update(|status, _| {
            status.state = ConnectorState::Starting;
            status.starts += 1;
        });
    }

    pub(crate) fn set_version(&self, version: u64) {
        self.update(|status, _| status.version = version);
    }

    pub(crate) fn fail(&self, error: String) {
        self.update(|status, _| {
            status.state = ConnectorState::Failed;
            status.metrics.errors += 1;
            status.last_error = Some(scrubbed(error));
            status.last_error_at = Some(std::time::SystemTime::now());
        });
    }

    pub(crate) fn restarting(&self) {
        self.update(|status, _| {
            status.state = ConnectorState::Restarting;
            status.restarts += 1;
        });
    }

    pub(crate) fn retried(&self, error: String) {
        self.update(|status, _| {
            status.metrics.retries += 1;
            status.metrics.errors += 1;
            status.last_error = Some(scrubbed(error));
            status.last_error_at = Some(std::time::SystemTime::now());
        });
    }

    pub(crate) fn received(&self, messages: usize, bytes: usize) {
        self.update(|status, _| {
            status.metrics.messages_in += messages as u64;
            status.metrics.bytes_in += bytes as u64;
        });
    }

    /// A batch delivered: `messages` of `bytes`, `latency` after it was received, with
    /// the time it spent in each stage (`latency` is its [`Stage::Total`]). One call, one
    /// lock, per batch: the stage timings ride along rather than take a lock of their own.
    pub(crate) fn delivered(
        &self,
        messages: usize,
        bytes: usize,
        latency: Duration,
        stages: &BatchStages,
    ) {
        let second = self.created.elapsed().as_secs();
        self.with_live(|live| {
            let metrics = &mut live.status.metrics;
            metrics.messages_out += messages as u64;
            metrics.bytes_out += bytes as u64;
            metrics.batch_latency.observe(latency);
            metrics.stages.observe(stages, latency);
            live.rate.add(second, messages as u64);
            // A batch done is progress, even one the transforms or the error policy
            // emptied.
            if live.stuck_since.is_some() {
                live.stuck_since = Some(Instant::now());
            }
        });
    }

    pub(crate) fn skipped(&self, error: String) {
        self.update(|status, _| {
            status.metrics.skipped += 1;
            status.metrics.errors += 1;
            status.last_error = Some(scrubbed(error));
            status.last_error_at = Some(std::time::SystemTime::now());
        });
    }

    pub(crate) fn dead_lettered(&self, error: String) {
        self.update(|status, _| {
            status.metrics.dead_letters += 1;
            status.metrics.errors += 1;
            status.last_error = Some(scrubbed(error));
            status.last_error_at = Some(std::time::SystemTime::now());
        });
    }

    pub(crate) fn filtered(&self, messages: usize) {
        if messages > 0 {
            self.update(|status, _| status.metrics.filtered += messages as u64);
        }
    }

    /// The chain whose counters the status shows.
    pub(crate) fn set_transforms(&self, chain: TransformChain) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.chain = chain;
    }

    /// The lag of the connector's (stream, topic) number `topic_index`; the
    /// connector's lag is the sum over its topics.
    pub(crate) fn set_lag(&self, topic_index: usize, lag: u64) {
        self.with_live(|live| {
            if live.lags.len() <= topic_index {
                live.lags.resize(topic_index + 1, 0);
            }
            live.lags[topic_index] = lag;
            let total = live.lags.iter().sum();
            live.status.metrics.lag = total;
            if total == 0 {
                live.stuck_since = None;
            } else if live.stuck_since.is_none() {
                live.stuck_since = Some(Instant::now());
            }
        });
    }

    /// Forgets every topic's lag (a sink run starts).
    pub(crate) fn clear_lag(&self) {
        self.with_live(|live| {
            live.lags.clear();
            live.stuck_since = None;
            live.status.metrics.lag = 0;
        });
    }

    /// The sink reset its consumer group.
    pub(crate) fn group_reset(&self) {
        self.update(|status, _| status.metrics.group_resets += 1);
    }

    fn with_live(&self, change: impl FnOnce(&mut Live)) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut guard);
    }

    pub(crate) fn snapshot(&self) -> ConnectorStatus {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut status = guard.status.clone();
        status.seconds_in_state = guard.since.elapsed().as_secs();
        let stuck_for = guard.stuck_since.map(|since| since.elapsed());
        if status.state == ConnectorState::Running
            && let (Some(stuck_for), Some(after)) = (stuck_for, self.stall_after)
            && stuck_for >= after
        {
            status.state = ConnectorState::Stalled;
            status.seconds_in_state = stuck_for.as_secs();
        }
        status.metrics.messages_per_second = guard.rate.rate(self.created.elapsed().as_secs());
        status.metrics.memory_bytes = self.budget.held();
        status.metrics.memory_peak_bytes = self.budget.peak();
        status.metrics.memory_budget_bytes = self.budget.limit();
        status.transforms = guard.chain.counts();
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_each_latency_in_the_first_bucket_that_holds_it() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[1], 1);
        assert_eq!(histogram.buckets[6], 1);
        assert_eq!(histogram.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(histogram.count, 4);
        assert!((histogram.sum_seconds - 60.0311).abs() < 1e-9);
    }

    #[test]
    fn a_batch_counts_in_the_stages_it_went_through_and_always_in_total() {
        for (index, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage.index(), index, "{stage}");
        }
        let mut stages = BatchStages::default();
        stages.set(Stage::Decode, Duration::from_millis(1));
        // A stage timed in two parts (a source's prepare: poller, then builder).
        stages.add(Stage::Prepare, Duration::from_millis(1));
        stages.add(Stage::Prepare, Duration::from_millis(2));
        let mut histograms = StageHistograms::default();
        histograms.observe(&stages, Duration::from_millis(10));
        let seen = |stage| {
            let histogram: &StageHistogram = histograms.get(stage);
            (
                histogram.count,
                (histogram.sum_seconds * 1e6).round() as u64,
            )
        };
        assert_eq!(seen(Stage::Decode), (1, 1000));
        assert_eq!(seen(Stage::Prepare), (1, 3000));
        assert_eq!(seen(Stage::Ffi), (0, 0), "not gone through: not observed");
        assert_eq!(seen(Stage::Total), (1, 10_000));
        // 5 ms is in the bucket bounded by 5 ms (bounds are inclusive).
        let mut histogram = StageHistogram::default();
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(6));
        assert_eq!(histogram.buckets[5], 1);
        assert_eq!(histogram.buckets[STAGE_BUCKETS.len()], 1);
    }

    #[test]
    fn rate_averages_complete_seconds_only() {
        let mut window = RateWindow::default();
        for second in 0..10 {
            window.add(second, 100);
        }
        window.add(10, 1_000_000);
        assert_eq!(window.rate(10), 100.0);
        // An old slot reused by a later second forgets its old count.
        window.add(16, 5);
        assert_eq!(window.rate(17), 1.0);
    }

    #[test]
    fn a_sink_with_lag_that_delivers_nothing_is_stalled_until_it_delivers() {
        let cell = StatusCell::new(ConnectorKind::Sink, "s", 1).stalled_after(Duration::ZERO);
        cell.set_state(ConnectorState::Running);
        cell.set_lag(0, 0);
        cell.set_lag(1, 0);
        assert_eq!(cell.snapshot().state, ConnectorState::Running, "no lag");
        cell.set_lag(1, 7);
        let status = cell.snapshot();
        assert_eq!(
            (status.state, status.metrics.lag),
            (ConnectorState::Stalled, 7)
        );
        cell.set_lag(0, 3);
        assert_eq!(cell.snapshot().metrics.lag, 10, "summed over topics");
        cell.set_lag(0, 0);
        cell.set_lag(1, 0);
        assert_eq!(cell.snapshot().state, ConnectorState::Running, "all read");

        let cell =
            StatusCell::new(ConnectorKind::Sink, "s", 1).stalled_after(Duration::from_secs(3600));
        cell.set_state(ConnectorState::Running);
        cell.set_lag(0, 7);
        assert_eq!(cell.snapshot().state, ConnectorState::Running, "not yet");
        cell.delivered(1, 1, Duration::ZERO, &BatchStages::default());
        assert_eq!(cell.snapshot().state, ConnectorState::Running);
        cell.set_state(ConnectorState::Paused);
        assert_eq!(
            cell.snapshot().state,
            ConnectorState::Paused,
            "only a running sink stalls"
        );
    }

    #[test]
    fn a_failure_outlives_a_stop() {
        let cell = StatusCell::new(ConnectorKind::Sink, "s", 1);
        cell.fail("broken".to_owned());
        cell.settle(ConnectorState::Stopped);
        assert_eq!(cell.snapshot().state, ConnectorState::Failed);
        cell.set_state(ConnectorState::Running);
        cell.settle(ConnectorState::Stopped);
        assert_eq!(cell.snapshot().state, ConnectorState::Stopped);
    }
}
