//! A source that misbehaves on request and reports the batch results it saw.
//!
//! Every batch holds one message whose payload is
//! `{"batch": n, "accepted": a, "rejected": r}`: the number of the poll and the outcomes
//! `on_batch_result` received so far. `plugin_config`:
//! - `panic_in`: `"open"`, `"poll"`, `"batch_result"` or `"close"`.
//! - `fail_poll_times`: return a retryable error from the first N polls.
//! - `wait_until_settled`: a poll made while an earlier batch is unsettled waits until
//!   it is settled, which only the host's settle can bring about: the driver must
//!   abandon the waiting poll to serve the settle, then poll again.
//! - `waiting_marker`: a file created when such a poll starts waiting, so that a test
//!   knows the poll is inside the plugin before it settles.
//!
//! Two batches may be unsettled at once (`MAX_UNSETTLED_BATCHES`): with one, the host
//! could not poll before settling, and a poll could never wait on a settle.

use connector_sdk::{
    BatchOutcome, ConnectorContext, Error, ProducedBatch, ProducedMessage, Schema, Source,
};
use serde::Deserialize;

/// Where to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// In `open`.
    Open,
    /// In `poll`.
    Poll,
    /// In `on_batch_result`.
    BatchResult,
    /// In `close`.
    Close,
}

/// The test source's config.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultySourceConfig {
    /// Where to panic.
    #[serde(default)]
    pub panic_in: Option<Stage>,
    /// How many polls fail before they succeed.
    #[serde(default)]
    pub fail_poll_times: u32,
    /// Whether a poll waits while an earlier batch is unsettled.
    #[serde(default)]
    pub wait_until_settled: bool,
    /// Created when a poll starts waiting for a settle.
    #[serde(default)]
    pub waiting_marker: Option<std::path::PathBuf>,
}

/// The misbehaving source.
#[derive(Debug)]
pub struct FaultySource {
    config: FaultySourceConfig,
    polls: u64,
    accepted: u64,
    rejected: u64,
    failures_left: u32,
}

impl Source for FaultySource {
    type Config = FaultySourceConfig;
    const MAX_UNSETTLED_BATCHES: u32 = 2;

    async fn open(
        config: FaultySourceConfig,
        _context: ConnectorContext,
        _state: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        if config.panic_in == Some(Stage::Open) {
            panic!("boom in open");
        }
        Ok(FaultySource {
            failures_left: config.fail_poll_times,
            config,
            polls: 0,
            accepted: 0,
            rejected: 0,
        })
    }

    async fn poll(&mut self) -> Result<ProducedBatch, Error> {
        if self.config.panic_in == Some(Stage::Poll) {
            panic!("boom in poll");
        }
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(Error::retryable("planned poll failure"));
        }
        if self.config.wait_until_settled && self.polls > self.accepted + self.rejected {
            if let Some(marker) = &self.config.waiting_marker {
                std::fs::write(marker, b"waiting").map_err(|error| {
                    Error::permanent(format!("cannot create {}: {error}", marker.display()))
                })?;
            }
            // Nothing is changed before this point, so the poll stays cancel-safe: the
            // driver drops it to serve the settle and polls again.
            std::future::pending::<()>().await;
        }
        self.polls += 1;
        let payload = serde_json::json!({
            "batch": self.polls,
            "accepted": self.accepted,
            "rejected": self.rejected,
        });
        Ok(ProducedBatch {
            schema: Schema::Json,
            messages: vec![ProducedMessage::new(payload.to_string())],
            state: None,
        })
    }

    async fn on_batch_result(&mut self, outcome: BatchOutcome) -> Result<(), Error> {
        if self.config.panic_in == Some(Stage::BatchResult) {
            panic!("boom in batch_result");
        }
        match outcome {
            BatchOutcome::Accepted => self.accepted += 1,
            BatchOutcome::Rejected => self.rejected += 1,
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        if self.config.panic_in == Some(Stage::Close) {
            panic!("boom in close");
        }
        Ok(())
    }
}

connector_sdk::export_source!(FaultySource, "faulty-source");
