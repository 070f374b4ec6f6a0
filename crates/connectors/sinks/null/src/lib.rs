//! The `null` sink: accepts and counts every message and writes nothing.
//!
//! It measures what the runtime costs without any sink work, in benchmarks and tests.
//! `plugin_config` takes no keys.

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use serde::Deserialize;

/// The sink's (empty) `plugin_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

/// Counts messages and bytes.
#[derive(Debug)]
pub struct NullSink {
    messages: u64,
    bytes: u64,
}

impl Sink for NullSink {
    type Config = NullSinkConfig;

    async fn open(_config: NullSinkConfig, _context: ConnectorContext) -> Result<Self, Error> {
        Ok(NullSink {
            messages: 0,
            bytes: 0,
        })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        self.messages += batch.messages.len() as u64;
        self.bytes += batch
            .messages
            .iter()
            .map(|message| message.payload().len() as u64)
            .sum::<u64>();
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        tracing::info!(
            messages = self.messages,
            bytes = self.bytes,
            "null sink closed"
        );
        Ok(())
    }
}

connector_sdk::export_sink!(NullSink, "null");
