//! The `stdout` sink: prints one line per message to standard output.
//!
//! `plugin_config`:
//! - `print_payload` (bool, default `false`): append the payload to each line (as text
//!   when it is UTF-8, else as its size).
//!
//! A line reads `<stream>/<topic>/<partition> offset=<n> id=<id> size=<bytes>` and, with
//! `print_payload`, ` payload=<payload>`. Each batch is written with one lock of stdout
//! and flushed before `consume` returns.

use std::io::Write;

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use serde::{Deserialize, Serialize};

/// The sink's `plugin_config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Print each payload after its metadata.
    #[serde(default)]
    pub print_payload: bool,
}

/// Prints messages to standard output.
#[derive(Debug)]
pub struct StdoutSink {
    config: StdoutSinkConfig,
    key: String,
    messages: u64,
}

impl Sink for StdoutSink {
    type Config = StdoutSinkConfig;

    async fn open(config: StdoutSinkConfig, context: ConnectorContext) -> Result<Self, Error> {
        tracing::info!(print_payload = config.print_payload, "stdout sink opened");
        Ok(StdoutSink {
            config,
            key: context.key,
            messages: 0,
        })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        let mut out = Vec::with_capacity(batch.messages.len() * 64);
        for message in batch.messages {
            let _ = write!(
                out,
                "{}/{}/{} offset={} id={} size={}",
                batch.stream,
                batch.topic,
                batch.partition_id,
                message.offset(),
                message.id(),
                message.payload().len()
            );
            if self.config.print_payload {
                match message.payload_str() {
                    Some(text) => {
                        let _ = write!(out, " payload={text}");
                    }
                    None => {
                        let _ = write!(out, " payload=<{} bytes>", message.payload().len());
                    }
                }
            }
            out.push(b'\n');
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()?;
        self.messages += batch.messages.len() as u64;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), Error> {
        tracing::info!(connector = %self.key, messages = self.messages, "stdout sink closed");
        Ok(())
    }
}

connector_sdk::export_sink!(StdoutSink, "stdout");
