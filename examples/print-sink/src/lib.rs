//! The README's "Writing a connector" tutorial, kept compiling and tested: everything
//! below this comment is the README's code block, and a test checks they are equal.
#![allow(missing_docs)]

use connector_sdk::{ConnectorContext, Error, MessageBatch, Sink};

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Printed before each message's offset.
    prefix: String,
}

pub struct PrintSink {
    prefix: String,
}

impl Sink for PrintSink {
    type Config = Config;

    async fn open(config: Config, _context: ConnectorContext) -> Result<Self, Error> {
        Ok(PrintSink {
            prefix: config.prefix,
        })
    }

    async fn consume(&mut self, batch: MessageBatch<'_>) -> Result<(), Error> {
        for message in batch.messages {
            println!(
                "{} {} {:?}",
                self.prefix,
                message.offset(),
                message.payload_str()
            );
        }
        Ok(()) // the runtime stores offsets only after this
    }
}

connector_sdk::export_sink!(PrintSink, "print");
