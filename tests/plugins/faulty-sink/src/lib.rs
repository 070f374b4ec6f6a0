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
//! - `fail_every`: a retryable error from every Nth `consume` call (0: never), for a
//!   sink that fails now and then.
//! - `record_to`: append each accepted message's payload to this file, one per line.
//! - `dsn`: unused; marked secret in the schema though not named like a secret.

use std::time::Duration;

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use serde::{Deserialize, Deserializer};

/// Where to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
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
    /// Every this many `consume` calls, one fails (retryable); 0 never.
    #[serde(default)]
    pub fail_every: u64,
    /// Where accepted payloads are appended, one per line.
    #[serde(default)]
    pub record_to: Option<std::path::PathBuf>,
    /// Unused: a field the schema marks secret though its name is no secret's, to test
    /// that the runtime redacts by the plugin's description.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    pub dsn: Option<String>,
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
    consumed: u64,
    record: Option<std::fs::File>,
}

impl Sink for FaultySink {
    type Config = FaultySinkConfig;

    async fn open(config: FaultySinkConfig, _context: ConnectorContext) -> Result<Self, Error> {
        if config.panic_in == Some(Stage::Open) {
            panic!("boom in open");
        }
        let record = match &config.record_to {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        Error::permanent(format!("cannot open {}: {error}", path.display()))
                    })?,
            ),
            None => None,
        };
        Ok(FaultySink {
            failures_left: config.fail_consume_times,
            config,
            consumed: 0,
            record,
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
        self.consumed += 1;
        if self.config.fail_every > 0 && self.consumed.is_multiple_of(self.config.fail_every) {
            return Err(Error::retryable(format!(
                "planned failure of call {}",
                self.consumed
            )));
        }
        if let Some(file) = &mut self.record {
            use std::io::Write;
            let mut lines = Vec::new();
            for message in batch.messages {
                lines.extend_from_slice(message.payload());
                lines.push(b'\n');
            }
            file.write_all(&lines)
                .map_err(|error| Error::retryable(format!("cannot record: {error}")))?;
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
