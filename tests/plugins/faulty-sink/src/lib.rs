//! A sink that misbehaves on request, to test the plugin boundary.
//!
//! `plugin_config`:
//! - `panic_in`: `"config"` (while the config deserialises), `"open"`, `"consume"` or
//!   `"close"`: panic there with the message `boom in <stage>`.
//! - `fail_consume_times`: return a retryable error from the first N `consume` calls.
//! - `consume_delay_ms`: wait this long in every `consume`.
//! - `log_marker`: log an INFO event with `marker = <value>` in every `consume`.
//! - `fail_payloads_containing`: a permanent error for any batch holding a message whose
//!   payload contains one of these strings (a poison message).

use std::time::Duration;

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use serde::{Deserialize, Deserializer};

/// Where to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// While deserialising the config (in the entry point itself).
    Config,
    /// In `open`.
    Open,
    /// In `consume`.
    Consume,
    /// In `close`.
    Close,
}

/// The test sink's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultySinkConfig {
    /// Where to panic.
    #[serde(default, deserialize_with = "panic_if_config")]
    pub panic_in: Option<Stage>,
    /// How many `consume` calls fail before they succeed.
    #[serde(default)]
    pub fail_consume_times: u32,
    /// Delay of every `consume`.
    #[serde(default)]
    pub consume_delay_ms: u64,
    /// Marker logged by every `consume`.
    #[serde(default)]
    pub log_marker: Option<String>,
    /// Payload fragments that make a batch fail permanently.
    #[serde(default)]
    pub fail_payloads_containing: Vec<String>,
}

fn panic_if_config<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Stage>, D::Error> {
    let stage = Option::<Stage>::deserialize(deserializer)?;
    if stage == Some(Stage::Config) {
        panic!("boom in config");
    }
    Ok(stage)
}

/// The misbehaving sink.
#[derive(Debug)]
pub struct FaultySink {
    config: FaultySinkConfig,
    failures_left: u32,
}

impl Sink for FaultySink {
    type Config = FaultySinkConfig;

    async fn open(config: FaultySinkConfig, _context: ConnectorContext) -> Result<Self, Error> {
        if config.panic_in == Some(Stage::Open) {
            panic!("boom in open");
        }
        Ok(FaultySink {
            failures_left: config.fail_consume_times,
            config,
        })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        if let Some(marker) = &self.config.log_marker {
            tracing::info!(marker = %marker, messages = batch.messages.len(), "faulty sink consumed");
        }
        if self.config.consume_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.consume_delay_ms)).await;
        }
        if self.config.panic_in == Some(Stage::Consume) {
            panic!("boom in consume");
        }
        for message in batch.messages {
            let payload = String::from_utf8_lossy(message.payload());
            if let Some(poison) = self
                .config
                .fail_payloads_containing
                .iter()
                .find(|poison| payload.contains(poison.as_str()))
            {
                return Err(Error::permanent(format!(
                    "poison message at offset {}: contains {poison}",
                    message.offset()
                )));
            }
        }
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(Error::retryable(format!(
                "planned failure, {} left",
                self.failures_left
            )));
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

connector_sdk::export_sink!(FaultySink, "faulty-sink");
