//! The `null` sink: accepts and counts every message and writes nothing.
//!
//! It measures what the runtime costs without any sink work, in benchmarks and tests.
//! `plugin_config` takes no keys.

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};
use serde::{Deserialize, Serialize};

/// The sink's (empty) `plugin_config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
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

#[cfg(test)]
mod tests {
    use connector_sdk::ErrorKind;
    use connector_sdk::testing::{SinkHarness, TestBatch, TestMessage};

    use super::*;

    #[tokio::test]
    async fn accepts_every_batch_and_counts_messages_and_bytes() {
        let mut sink = SinkHarness::<NullSink>::open("{}").await.unwrap();
        sink.consume(&TestBatch::of(["a", "bc"])).await.unwrap();
        sink.consume(&TestBatch::new()).await.unwrap();
        let binary = TestBatch::new().message(TestMessage::new(vec![0xff; 1000]));
        sink.consume(&binary).await.unwrap();
        assert_eq!(sink.connector().messages, 3);
        assert_eq!(sink.connector().bytes, 1003);
        sink.close().await.unwrap();
    }

    #[tokio::test]
    async fn takes_no_config_keys() {
        SinkHarness::<NullSink>::open(serde_json::json!({}))
            .await
            .unwrap();
        let error = SinkHarness::<NullSink>::open(r#"{"verbose": true}"#)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidConfig);
        assert!(
            error.message().contains("unknown field `verbose`"),
            "{error}"
        );
    }
}
