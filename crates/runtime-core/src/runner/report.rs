//! What a connector logs per batch when its config asks: `verbose = true` logs every
//! batch at info level, `benchmark = true` logs how long each stage took for it.

use std::time::Duration;

use crate::bus::Destination;

/// How long each stage took for one batch. For a source: polling the plugin, shaping
/// and making the send ready, the send to Iggy, persisting the state and settling with
/// the plugin. For a sink: polling (or reading ahead) from Iggy, shaping, handing the
/// batch to the plugin, storing the offset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StageTimes {
    pub(super) poll: Duration,
    pub(super) transform: Duration,
    pub(super) send: Duration,
    pub(super) commit: Duration,
}

/// A connector's `verbose` and `benchmark` settings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchReport {
    verbose: bool,
    benchmark: bool,
}

impl BatchReport {
    pub(crate) fn new(verbose: bool, benchmark: bool) -> Self {
        BatchReport { verbose, benchmark }
    }

    /// Logs a batch that was delivered (`topic`: the sink's; a source's batch may
    /// have gone to several).
    pub(super) fn batch(
        &self,
        connector: &str,
        topic: Option<&Destination>,
        messages: usize,
        bytes: usize,
        times: &StageTimes,
    ) {
        if !self.verbose && !self.benchmark {
            return;
        }
        let topic = topic.map(tracing::field::display);
        if self.verbose {
            tracing::info!(connector, topic, messages, bytes, "batch delivered");
        }
        if self.benchmark {
            tracing::info!(
                connector,
                topic,
                messages,
                poll_us = micros(times.poll),
                transform_us = micros(times.transform),
                send_us = micros(times.send),
                commit_us = micros(times.commit),
                "batch stage timings"
            );
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
